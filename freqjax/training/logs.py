"""Metric logs: TensorBoard event files (tensorboardX, no TensorFlow) and one JSON-lines file.

`<workdir>/tensorboard/` holds the event files; `<workdir>/metrics.jsonl` one JSON object per
line: {"step": int, "split": str, <metric>: float, ...}. When a run resumes from a
checkpoint at step s, lines after s (written by the interrupted run) are dropped and
TensorBoard is told to purge its events after s, so the logs equal an uninterrupted run's.
Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os

from freqjax import artifacts, parallel, workdir as workdir_lib


class MetricWriter:

  def __init__(self, workdir: str, resume_step: int | None = None):
    wd = workdir_lib.Workdir(workdir)
    self.enabled = parallel.is_main_process()
    self.path = wd.metrics
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(wd.root, exist_ok=True)
    if resume_step is not None:
      self._truncate(resume_step)
    elif os.path.exists(self.path):
      os.remove(self.path)  # a fresh run (no checkpoint) starts fresh logs
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

    self._tb = SummaryWriter(
        wd.tensorboard,
        purge_step=None if resume_step is None else resume_step + 1,
    )

  def _truncate(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    # A resumed run writes its own final test line, so an earlier one never stays (a rerun of
    # a finished run, or a kill between that line and train_results.json, would repeat it).
    keep = [r for r in read_jsonl(self.path) if r["step"] <= step and r["split"] != "test"]
    artifacts.write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    clean = {
        k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else v)
        for k, v in metrics.items()
    }
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), "split": split, **clean}) + "\n")
    for k, v in clean.items():
      if isinstance(v, float) and math.isfinite(v):
        self._tb.add_scalar(f"{split}/{k}", v, int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_jsonl(path: str) -> list[dict]:
  out = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          out.append(json.loads(line))
        except json.JSONDecodeError:
          break  # a line cut short by a kill: ignore it and anything after
  return out
