#!/usr/bin/env bash
# A container runtime for shoal's container tests (tests/test_containers.py): rootful Podman
# from Debian and a tiny local image, localhost/shoal-test (busybox, no registry needed).
# Safe to run again. For CI and test machines: where Podman cannot start a container as it
# is configured (crun on a host with hybrid cgroups; default ulimits above what root may
# set), it writes /etc/containers/containers.conf (runc, ulimits within the hard limits).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
for pkg in podman runc catatonit busybox-static; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

image=localhost/shoal-test:latest
if ! podman image exists "$image"; then
  R=$(mktemp -d)
  mkdir -p "$R"/{bin,tmp,proc,sys,dev,etc,root,usr}
  chmod 1777 "$R/tmp"
  ln -s usr/lib "$R/lib"
  ln -s usr/lib64 "$R/lib64"
  cp /bin/busybox "$R/bin/"
  for a in sh cat echo ls sleep id env true false head kill ps pwd mkdir test wc; do
    ln -s busybox "$R/bin/$a"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
  echo 'root:x:0:' > "$R/etc/group"
  echo 'shoal-test' > "$R/etc/shoal-test-image"  # (tests check they ran inside)
  tar -C "$R" -c . | podman import -q - "$image" >/dev/null
  rm -rf "$R"
fi

if ! podman run --rm --pull=never --network=none "$image" true 2>/dev/null; then
  hn=$(ulimit -Hn); [ "$hn" = unlimited ] && hn=1048576
  hu=$(ulimit -Hu); { [ "$hu" = unlimited ] || [ "$hu" -gt 32768 ]; } && hu=32768
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n[engine]\nruntime = "runc"\n' \
    "$hn" "$hn" "$hu" "$hu" > /etc/containers/containers.conf
fi
podman run --rm --pull=never --network=none "$image" sh -c 'test -e /etc/shoal-test-image'
echo "podman-setup: $(podman --version), image $image ready"
