"""The main job: every stage of `freqjax.stages` in order, reusing finished ones.

    prepare data -> train -> ADCS -> DFMs -> shortcut test -> Fourier sensitivity
      [-> Fourier heat map, if analysis.heatmap.in_pipeline] -> dynamics -> figures -> report

Everything lands in the workdir (`freqjax.workdir.Workdir` names each file). Rerunning with
the same workdir reuses every finished stage: an artifact whose recorded fingerprint
(checkpoint step, dataset, analysis settings) matches is not recomputed, and training
resumes or is skipped when complete. The workdir's lock is held for the whole job.
"""

from __future__ import annotations

import time

from absl import logging

from freqjax import (
    artifacts,
    config as config_lib,
    parallel,
    report as report_lib,
    workdir as workdir_lib,
)
from freqjax.data import datasets
from freqjax.stages import (
    adcs,
    context,
    dfm,
    dynamics,
    figures,
    heatmap,
    sensitivity,
    shortcut,
    summary,
)
from freqjax.training import loop


def run_pipeline(config, workdir, *, move_aside: bool = False) -> dict:
  """Runs (or reuses) every stage; returns summary.json's content."""
  config_lib.validate(config)  # before the run's identity is taken (it fills in mean/std)
  wd = workdir_lib.Workdir(workdir)
  with wd.lock():
    seconds = {}

    def timed(name, fn):
      t0 = time.time()
      out = fn()
      seconds[name] = round(time.time() - t0, 1)
      logging.info("stage %s: %.1f s", name, seconds[name])
      return out

    ds = timed("prepare", lambda: datasets.prepare(config.data))
    wd.claim(workdir_lib.identity(config, ds.path), move_aside=move_aside)
    if wd.training_done():
      logging.info("train: finished run found in %s; reusing it", wd.root)
      seconds["train"] = 0.0
    else:
      timed("train", lambda: loop.train_and_evaluate(config, wd.root, move_aside=move_aside))
    ctx = timed("restore", lambda: context.load_context(config, wd.root))
    timed("adcs", lambda: adcs.run(config, wd.root, ctx))
    timed("dfm", lambda: dfm.run(config, wd.root, ctx))
    timed("shortcut", lambda: shortcut.run(config, wd.root, ctx))
    if config.analysis.sensitivity.in_pipeline:
      timed("sensitivity", lambda: sensitivity.run(config, wd.root, ctx))
    if config.analysis.heatmap.in_pipeline:
      timed("heatmap", lambda: heatmap.run(config, wd.root, ctx))
    timed("dynamics", lambda: dynamics.run(config, wd.root))
    timed("figures", lambda: figures.run(config, wd.root, ctx))
    result = summary.summarise(config, ctx, seconds)
    if parallel.is_main_process():
      artifacts.write_json(wd.summary, result)
      report_lib.write(config, wd.root, result)
      logging.info("Report: %s", wd.report)
    return result
