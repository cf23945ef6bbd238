"""Export to TensorBoard: ``DEST/<step>/<task folder>/`` per task, with its parameters as
HParams, its final metrics as scalars (``final/NAME``, the HParams table's columns) and its
history as scalars per step (``NAME``); ``DEST/<step>/`` holds the HParams configuration
(``pip install 'shoal[tensorboard]'``; ``tensorboard --logdir DEST`` shows it). Written with
TensorBoard's own event writer and protos: no TensorFlow, no torch.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.results.history import points


class TensorBoardWriter:
    def __init__(self, dest: Path) -> None:
        try:
            from tensorboard.compat.proto import event_pb2  # noqa: F401
        except ImportError:
            raise ShoalError("--to tensorboard needs TensorBoard: pip install "
                             "'shoal[tensorboard]' (or tensorboard)") from None
        self.dest = dest
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ShoalError(f"--to tensorboard {dest}: cannot make the folder: {exc}") from None

    def step(self, name: str, dims: list[str], metrics: list[str], old: Any) -> Any:
        from tensorboard.plugins.hparams import summary_v2 as hp

        folder = self.dest / name
        for f in folder.glob("events.out.tfevents.*"):
            f.unlink()  # (one configuration: this export's)
        pb = hp.hparams_config_pb(
            hparams=[hp.HParam(d) for d in dims],
            metrics=[hp.Metric(f"final/{m}") for m in metrics])
        self._write(folder, [(pb, 0)])
        return name

    def task(self, row: Any, parent: Any, old: Any) -> Any:
        from tensorboard.plugins.hparams import summary_v2 as hp

        folder = self.dest / row.step / (row.key or "_")
        shutil.rmtree(folder, ignore_errors=True)  # (a task that ran again: written anew)
        params = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
                  for k, v in row.params.items()}
        events: list[tuple[Any, int]] = [(hp.hparams_pb(params, trial_id=row.label,
                                                        start_time_secs=row.started), 0)]
        series = points(row.history) if row.history is not None else {}
        last = max((x for pts in series.values() for x, _ in pts), default=0)
        events += [(_scalar(name, v), x) for name, pts in series.items() for x, v in pts]
        for k, v in row.metrics.items():
            if _number(v):
                events.append((_scalar(f"final/{k}", v), last))
        status = "STATUS_SUCCESS" if row.status == "done" else "STATUS_FAILURE"
        events.append((_session_end(status, row.ended), last))
        self._write(folder, events, row.ended)
        return str(folder)

    def _write(self, folder: Path, events: list[tuple[Any, int]],
               wall: float | None = None) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        writer = EventFileWriter(str(folder))
        now = wall or time.time()
        try:
            for summary, step in events:
                writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary))
        finally:
            writer.close()

    def close(self) -> None:
        pass


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _scalar(tag: str, value: float) -> Any:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.scalar import metadata
    from tensorboard.util import tensor_util

    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, tensor=tensor_util.make_tensor_proto(float(value)),
                      metadata=metadata.create_summary_metadata(display_name=tag,
                                                                description=""))
    return summary


def _session_end(status: str, ended: float | None) -> Any:
    """The HParams session-end summary (its status), as TensorBoard's own
    ``session_end_pb`` makes it but without TensorFlow."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status),
                                          end_time_secs=ended or time.time())
    data = plugin_data_pb2.HParamsPluginData(session_end_info=info)
    summary = summary_pb2.Summary()
    summary.value.add(tag=metadata.SESSION_END_INFO_TAG, tensor=metadata.NULL_TENSOR,
                      metadata=metadata.create_summary_metadata(data))
    return summary
