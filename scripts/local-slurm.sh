#!/usr/bin/env bash
# local-slurm.sh -- install (if needed), configure and start a one-node
# Slurm cluster on localhost WITHOUT systemd (Debian 12 bookworm, Slurm 22.05).
#
#   scripts/local-slurm.sh          # install/configure/start, wait for idle node
#   scripts/local-slurm.sh stop     # stop the daemons this script started
#   scripts/local-slurm.sh status   # show daemons and node state
#
# Idempotent: safe to run repeatedly.  If the daemons already run with the
# same configuration it only re-checks that the node is usable (~0.1 s).  If
# the generated config changed, the daemons (found via their pid files) are
# restarted (~4 s).  Jobs in the queue survive a restart (state is saved).
#
# Tunables (environment variables):
#   SLURM_NODE_CPUS      CPUs advertised for the node (default: nproc).  A
#                        larger value oversubscribes the real cores (uses
#                        SlurmdParameters=config_overrides, so the node is not
#                        drained for "Low CPU count").  E.g. 8 or 32 for tests
#                        with many trivial array tasks.
#   SLURM_REALMEM_MB     RealMemory (default: 90% of what `slurmd -C` reports).
#   SLURM_DAEMON_USER    SlurmUser: root (default) or slurm.  Both work; slurmd
#                        always runs as root; jobs run as the submitting user.
#   SLURM_MAX_ARRAY_SIZE MaxArraySize (default 10001; Slurm's default is 1001,
#                        i.e. max index 1000).
#   SLURM_MIN_JOB_AGE    MinJobAge: seconds a finished job stays visible in
#                        squeue/scontrol (default 300 = Slurm default).
#   SLURM_CRED_EXPIRE    AuthInfo=cred_expire (default 10).  This is also the
#                        hold time before a requeued job may start again
#                        (Slurm default 120 s).
#   SLURM_SCHED_PARAMS   SchedulerParameters (default tuned for fast turnover).
#   SLURM_CGROUP         auto (default) | 1 | 0.  1 = proctrack/cgroup +
#                        task/cgroup on cgroup v1 (enforces --mem, gives the
#                        OUT_OF_MEMORY state, kills stray processes); 0 =
#                        proctrack/linuxproc + task/none.  auto = 1 if a
#                        writable cgroup-v1 memory+freezer hierarchy exists.
#   SLURM_ACCOUNTING     none (default) | slurmdbd.  Finished jobs are always
#                        logged by jobcomp/filetxt to /var/log/slurm/jobcomp.log.
#                        slurmdbd additionally installs mariadb-server+slurmdbd
#                        and starts them, so that plain `sacct` works.
#   SLURM_EXTRA_CONF     extra lines appended to slurm.conf (a repeated key
#                        overrides the earlier value).
#   SLURM_NO_INSTALL=1   never run apt-get (fail if packages are missing).
#   SLURM_WAIT_SECS      how long to wait for the node to become idle (60).
set -euo pipefail

log() { printf '[start-local-slurm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

T0=$(date +%s)
HOST=$(hostname -s)
DAEMON_USER=${SLURM_DAEMON_USER:-root}
MAX_ARRAY=${SLURM_MAX_ARRAY_SIZE:-10001}
MIN_JOB_AGE=${SLURM_MIN_JOB_AGE:-300}
WAIT_SECS=${SLURM_WAIT_SECS:-60}
SCHED_PARAMS=${SLURM_SCHED_PARAMS:-batch_sched_delay=0,bf_interval=1,sched_interval=5,sched_min_interval=0}
CRED_EXPIRE=${SLURM_CRED_EXPIRE:-10}
USE_CGROUP=${SLURM_CGROUP:-auto}
ACCOUNTING=${SLURM_ACCOUNTING:-none}

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
DBD_PID=/run/slurmdbd.pid
MUNGE_PID=/run/munge/munged.pid
MARIADB_PID=/run/mysqld/mysqld.pid
MARIADB_MARK=/run/start-local-slurm.mariadb-started   # we started mariadbd
DBD_PASS_FILE=/etc/slurm/.slurmdbd-db-pass

pid_alive() {  # pid_alive PIDFILE COMM -> true if that process runs
  local f=$1 comm=$2 p
  [ -s "$f" ] || return 1
  p=$(cat "$f" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -r "/proc/$p/comm" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$comm" ]
}

stop_pidfile() {  # stop a daemon by the PID in its pid file (never by name)
  local f=$1 comm=$2 p
  if pid_alive "$f" "$comm"; then
    p=$(cat "$f")
    log "stopping $comm (pid $p)"
    kill "$p" 2>/dev/null || true
    for _ in $(seq 150); do [ -d "/proc/$p" ] || break; sleep 0.1; done
    if [ -d "/proc/$p" ]; then kill -9 "$p" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}

case "${1:-start}" in
  stop)
    stop_pidfile "$SLURMD_PID" slurmd
    stop_pidfile "$CTLD_PID" slurmctld
    stop_pidfile "$DBD_PID" slurmdbd
    if [ -f "$MARIADB_MARK" ]; then stop_pidfile "$MARIADB_PID" mariadbd; rm -f "$MARIADB_MARK"; fi
    stop_pidfile "$MUNGE_PID" munged
    exit 0 ;;
  status)
    for pf in "$MUNGE_PID:munged" "$MARIADB_PID:mariadbd" "$DBD_PID:slurmdbd" "$CTLD_PID:slurmctld" "$SLURMD_PID:slurmd"; do
      if pid_alive "${pf%%:*}" "${pf##*:}"; then echo "${pf##*:} running pid $(cat "${pf%%:*}")"; else echo "${pf##*:} not running"; fi
    done
    sinfo -N 2>/dev/null || true
    exit 0 ;;
  start) ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac

apt_install() {  # apt_install PKG...   (retries once after apt-get update)
  log "installing: $*"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends "$@" \
      >>/tmp/start-local-slurm.apt.log 2>&1 \
    || { apt-get update >>/tmp/start-local-slurm.apt.log 2>&1 && \
         DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends "$@" \
           >>/tmp/start-local-slurm.apt.log 2>&1; } \
    || die "apt-get install $* failed, see /tmp/start-local-slurm.apt.log"
  log "install done after $(( $(date +%s) - T0 )) s"
}

# ---------------------------------------------------------------- 1. install
need=()
for b in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
  command -v "${b%%:*}" >/dev/null 2>&1 || need+=("${b##*:}")
done
if [ "$ACCOUNTING" = slurmdbd ]; then
  command -v slurmdbd >/dev/null 2>&1 || need+=(slurmdbd)
  command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  [ "${SLURM_NO_INSTALL:-0}" = 1 ] && die "missing packages: ${need[*]}"
  # The postinst scripts cannot start services here (no systemd /
  # policy-rc.d); that is harmless, we start the daemons ourselves.
  apt_install "${need[@]}"
fi
NODE_CPUS=${SLURM_NODE_CPUS:-$(nproc)}

# ---------------------------------------------------------------- 2. munge
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0700 /etc/munge
if [ ! -s /etc/munge/munge.key ]; then    # the Debian postinst creates one
  log "creating munge key"
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile /etc/munge/munge.key
  else
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

if pid_alive "$MUNGE_PID" munged && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running (pid $(cat $MUNGE_PID))"
else
  log "starting munged"
  # as the munge user, like the systemd unit; --force: ignore a stale socket
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n | unmunge >/dev/null || die "munge self-test failed"
fi

# ---------------------------------------------------------------- 3. config
REAL_MEM_DETECTED=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
[ -n "$REAL_MEM_DETECTED" ] || REAL_MEM_DETECTED=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 ))
REAL_MEM=${SLURM_REALMEM_MB:-$(( REAL_MEM_DETECTED * 9 / 10 ))}
# Memory is a consumable resource (so --mem works); give jobs that do not ask
# for memory an equal share per CPU so that memory never limits concurrency.
DEF_MEM_PER_CPU=$(( REAL_MEM / NODE_CPUS ))

if [ "$USE_CGROUP" = auto ]; then
  USE_CGROUP=0
  probe=/sys/fs/cgroup/memory/.start-local-slurm-probe.$$
  if [ -f /sys/fs/cgroup/memory/cgroup.procs ] && [ -d /sys/fs/cgroup/freezer ] \
     && mkdir "$probe" 2>/dev/null; then
    rmdir "$probe" 2>/dev/null || true
    USE_CGROUP=1
  fi
fi

install -d -m 0755 "$CONF_DIR"
install -d -m 0755 "$STATE_DIR" "$LOG_DIR"
install -d -o root -g root -m 0755 "$SPOOL_DIR"

CHANGED=0
put_file() {  # put_file SRC DEST MODE OWNER -> sets CHANGED=1 if content differs
  if [ ! -f "$2" ] || ! cmp -s "$1" "$2"; then
    [ -f "$2" ] && cp -p "$2" "$2.bak.$(date +%s)"
    install -m "$3" -o "$4" -g "$4" "$1" "$2"
    CHANGED=1
    log "wrote $2"
  fi
  rm -f "$1"
}

if [ "$USE_CGROUP" = 1 ]; then
  TRACK_CONF='# --- cgroup v1 containment (SLURM_CGROUP=1)
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/cgroup'
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
EOF
  put_file "$tmp" "$CONF_DIR/cgroup.conf" 0644 root
else
  TRACK_CONF='# --- no cgroups: track processes via /proc, no containment, --mem not
#     enforced (add JobAcctGatherParams=OverMemoryKill for a polled kill)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux'
fi

if [ "$ACCOUNTING" = slurmdbd ]; then
  ACCT_CONF='AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost'
else
  ACCT_CONF='AccountingStorageType=accounting_storage/none'
fi

tmp=$(mktemp)
cat >"$tmp" <<EOF
# Generated by start-local-slurm.sh -- single-node test cluster, no systemd.
ClusterName=localcluster
SlurmctldHost=${HOST}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
# cred_expire = also the delay before a requeued job may restart (default 120)
AuthInfo=cred_expire=${CRED_EXPIRE}
SlurmUser=${DAEMON_USER}
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
${TRACK_CONF}
JobAcctGatherFrequency=10
# --- accounting: finished jobs (one line each, incl. ArrayJobId/ArrayTaskId,
#     JobState, ExitCode) go to a text file; 'sacct -c' can read it too.
${ACCT_CONF}
JobCompType=jobcomp/filetxt
JobCompLoc=${LOG_DIR}/jobcomp.log
# --- scheduling (tuned for quick turnover of many tiny jobs)
SchedulerType=sched/backfill
SchedulerParameters=${SCHED_PARAMS}
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=${DEF_MEM_PER_CPU}
SlurmdParameters=config_overrides
ReturnToService=2
MaxArraySize=${MAX_ARRAY}
MaxJobCount=100000
MinJobAge=${MIN_JOB_AGE}
# seconds between SIGTERM and SIGKILL at time limit / scancel / preemption
KillWait=5
OverTimeLimit=0
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
Waittime=0
# --- preemption: a job in partition 'urgent' cancels jobs of 'debug'
#     (they end as PREEMPTED).  Unused otherwise.
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
# --- the node and partitions
NodeName=${HOST} NodeHostname=${HOST} NodeAddr=127.0.0.1 CPUs=${NODE_CPUS} RealMemory=${REAL_MEM} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=10
EOF
if [ -n "${SLURM_EXTRA_CONF:-}" ]; then printf '%s\n' "$SLURM_EXTRA_CONF" >>"$tmp"; fi
put_file "$tmp" "$CONF" 0644 root

# ---------------------------------------------------------------- 4. slurmdbd (optional)
DBD_CHANGED=0
if [ "$ACCOUNTING" = slurmdbd ]; then
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if mariadb-admin ping >/dev/null 2>&1; then
    log "mariadb already running"
  else
    log "starting mariadbd"
    setsid -f /usr/sbin/mariadbd --user=mysql >>/var/log/mariadbd-start-local-slurm.log 2>&1 </dev/null
    touch "$MARIADB_MARK"
    for _ in $(seq 300); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.1; done
    mariadb-admin ping >/dev/null 2>&1 || die "mariadbd did not start"
  fi
  [ -s "$DBD_PASS_FILE" ] || { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DBD_PASS_FILE"; chmod 600 "$DBD_PASS_FILE"; }
  DBPASS=$(cat "$DBD_PASS_FILE")
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DBPASS}';
              ALTER USER 'slurm'@'localhost' IDENTIFIED BY '${DBPASS}';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=${DAEMON_USER}
PidFile=${DBD_PID}
LogFile=${LOG_DIR}/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DBPASS}
StorageLoc=slurm_acct_db
EOF
  before=$CHANGED; CHANGED=0
  put_file "$tmp" "$DBD_CONF" 0600 "$DAEMON_USER"   # must be 0600, owned by SlurmUser
  DBD_CHANGED=$CHANGED; CHANGED=$(( before | CHANGED ))
fi

# ---------------------------------------------------------------- 5. daemons
if [ "$CHANGED" = 1 ]; then
  stop_pidfile "$SLURMD_PID" slurmd
  stop_pidfile "$CTLD_PID" slurmctld
fi
if [ "$DBD_CHANGED" = 1 ] || { [ "$ACCOUNTING" != slurmdbd ] && pid_alive "$DBD_PID" slurmdbd; }; then
  stop_pidfile "$DBD_PID" slurmdbd
fi
if [ "$ACCOUNTING" != slurmdbd ] && [ -f "$MARIADB_MARK" ]; then   # only if we started it
  stop_pidfile "$MARIADB_PID" mariadbd; rm -f "$MARIADB_MARK"
fi
# After the old slurmctld is gone (it writes state on exit): state and logs
# must belong to SlurmUser (matters when switching between root and slurm).
chown -R "$DAEMON_USER:$DAEMON_USER" "$STATE_DIR" "$LOG_DIR"

if [ "$ACCOUNTING" = slurmdbd ]; then
  if pid_alive "$DBD_PID" slurmdbd; then
    log "slurmdbd already running (pid $(cat $DBD_PID))"
  else
    log "starting slurmdbd"
    /usr/sbin/slurmdbd
    for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.1; done
    (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null || die "slurmdbd not listening; see $LOG_DIR/slurmdbd.log"
  fi
fi

if pid_alive "$CTLD_PID" slurmctld; then
  log "slurmctld already running (pid $(cat $CTLD_PID))"
else
  log "starting slurmctld"
  # -i: ignore unreadable/incompatible saved state instead of refusing to start
  /usr/sbin/slurmctld -i
fi
for _ in $(seq 150); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || die "slurmctld not responding; see $LOG_DIR/slurmctld.log"

if pid_alive "$SLURMD_PID" slurmd; then
  log "slurmd already running (pid $(cat $SLURMD_PID))"
else
  log "starting slurmd"
  /usr/sbin/slurmd
fi

# ---------------------------------------------------------------- 6. wait
deadline=$(( $(date +%s) + WAIT_SECS ))
state=""
while :; do
  state=$(sinfo -h -N -n "$HOST" -p debug -o '%t' 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mix|mix-|alloc|comp) break ;;
    drain*|drng|down*|inval*|fail*)
      # e.g. left over from an earlier run with another config: resume it
      scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
  esac
  [ "$(date +%s)" -ge "$deadline" ] && die "node state '$state' after ${WAIT_SECS}s; see $LOG_DIR/*.log"
  sleep 0.3
done

pids="munged=$(cat $MUNGE_PID) slurmctld=$(cat $CTLD_PID) slurmd=$(cat $SLURMD_PID)"
[ "$ACCOUNTING" = slurmdbd ] && pids="$pids slurmdbd=$(cat $DBD_PID) mariadbd=$(cat $MARIADB_PID 2>/dev/null || echo ?)"
log "ready after $(( $(date +%s) - T0 )) s: node $HOST state=$state CPUs=$NODE_CPUS RealMemory=$REAL_MEM cgroup=$USE_CGROUP accounting=$ACCOUNTING"
log "pids: $pids"
exit 0
