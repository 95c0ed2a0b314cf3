"""The paper's learning-order experiment on Syn-1..4 (launch/learning_dynamics.py).

Trains each (band, seed) for `dynamics.until_step` steps, evaluating every
`dynamics.every_steps` steps on the full test set and on the view that keeps only C3's band,
and reports the step at which each class is learned (TPR - FPR >= threshold on the full
view) and whether C3 is first. Writes <workdir>/syn<k>_seed<s>/ (a training run each, with
figures/dynamics.png), learning_dynamics.json and learning_dynamics.md. Finished runs are
reused.
"""

from __future__ import annotations

from freqjax import artifacts, parallel, report as report_lib, workdir as workdir_lib
from freqjax.evaluation import dynamics as dyn_lib
from freqjax.stages import dynamics as dynamics_stage
from freqjax.training import loop


def run(config, workdir, bands=(1, 2, 3, 4), seeds=(0, 1, 2)) -> dict:
  wd = workdir_lib.Workdir(workdir)
  with wd.lock():
    return _run(config, wd, bands, seeds)


def _run(config, wd: workdir_lib.Workdir, bands, seeds) -> dict:
  every = int(config.dynamics.every_steps or 5)
  names = list(config.data.class_names)
  rows = []
  for band in bands:
    for seed in seeds:
      c = config.copy_and_resolve_references()
      c.data.synthetic.band = int(band)
      c.data.name = f"syn{band}" + ("_small" if "small" in config.data.name else "")
      c.seed = int(seed)
      c.dynamics.views = ("full", f"keep_b{band}")
      c.dynamics.every_steps = every
      c.train.max_steps = int(c.dynamics.until_step)
      c.train.epochs = max(int(c.train.epochs), 10**6)  # max_steps ends the run
      run_wd = workdir_lib.Workdir(wd.path(f"syn{band}_seed{seed}"))
      if not run_wd.training_done():
        loop.train_and_evaluate(c, run_wd.root)
      dyn_art = dynamics_stage.run(c, run_wd.root)
      steps, views = dyn_art["learned_step"], dyn_art.meta["views"]
      learned = [int(s) for s in steps[views.index("full")]]
      (first,) = dyn_lib.learned_first(steps[views.index("full")][None])
      later = sorted(s for k, s in enumerate(learned) if s >= 0 and k not in first)
      margin = later[0] - learned[first[0]] if len(first) == 1 and later else None
      rows.append(
          {
              "band": int(band),
              "seed": int(seed),
              "learned_step": learned,
              "learned_step_keep_band": [int(s) for s in steps[views.index(f"keep_b{band}")]],
              "first": [names[k] for k in first],
              "c3_strictly_first": first == [3],
              "margin_steps": margin,
              "last_evaluated_step": int(dyn_art["steps"].max()),
              "test_accuracy_at_end": run_wd.train_results()["test_accuracy"],
          }
      )
  result = {
      "runs": rows,
      "every_steps": every,
      "until_step": int(config.dynamics.until_step),
      "last_evaluated_step": max(r["last_evaluated_step"] for r in rows),
      "threshold": float(config.dynamics.threshold),
      "c3_first_count": sum(r["c3_strictly_first"] for r in rows),
      "total": len(rows),
  }
  if parallel.is_main_process():
    table = report_lib.learning_dynamics_table(result, names)
    artifacts.write_json(wd.path("learning_dynamics.json"), result)
    artifacts.write_text(wd.path("learning_dynamics.md"), table)
    print(table)
  return result
