"""Shortcut-test stage: DFM-filtered TPR/FPR on the test set (analysis/shortcut.npz and
.json), on every OOD folder test set of the config (shortcut_ood_<name>.npz), and with
another run's DFMs when `analysis.shortcut_dfms` names them (shortcut_dfms.npz)."""

from __future__ import annotations

import hashlib
import os

from freqjax import artifacts, parallel
from freqjax.data import datasets
from freqjax.evaluation import dfm_summary, shortcut
from freqjax.stages import context


def ood_name(root: str) -> str:
  return os.path.basename(os.path.normpath(root))


@context.stage
def run(config, workdir, ctx: context.Context | None = None) -> artifacts.Artifact:
  """Returns the test set's artifact (after writing every OOD set's too). With
  `analysis.shortcut_dfms` and no DFMs of its own yet, the run is tested on the other DFMs
  only (returning that artifact)."""
  ctx = context.ensure(config, workdir, ctx)
  a = config.analysis
  sets = []
  own = ctx.wd.artifact("dfm")
  # With other DFMs to test on, the run's own may not exist yet (nor its OOD tests).
  has_own = os.path.exists(own) or not a.shortcut_dfms
  if has_own:
    dfm_art = artifacts.load(own, "dfm")
    maps = dfm_summary.dfm_at(dfm_art, float(a.threshold))
    dfm_fp = dfm_art.meta.get("fingerprint")
    sets.append(("test", ctx.wd.artifact("shortcut"), ctx.images, ctx.labels, maps, dfm_fp))
  if a.shortcut_dfms:
    other = dfm_summary.read_dfms(
        a.shortcut_dfms,
        float(a.threshold),
        len(ctx.class_names),
        int(config.data.image_size),
        "config.analysis.shortcut_dfms",
    )
    digest = hashlib.sha1(other.tobytes()).hexdigest()[:12]
    sets.append(
        ("test, DFMs of " + a.shortcut_dfms, ctx.wd.artifact("shortcut", "_dfms"), ctx.images,
         ctx.labels, other, digest)
    )  # fmt: skip
  for root in a.ood_dirs if has_own else ():
    name = ood_name(root)
    ood = datasets.prepare_ood(config.data, root, a.ood_split, label=f"ood_{name}")
    x, y = ood.arrays("test")
    sets.append(
        (
            f"ood:{name}",
            ctx.wd.artifact("shortcut", f"_ood_{name}"),
            context.normalised(config, x),
            y,
            maps,
            dfm_fp,
        )
    )
  out = None
  for name, path, x, y, dfms, dfms_fp in sets:
    fp = ctx.fingerprint("shortcut", name, float(a.threshold), dfms_fp)

    def compute(x=x, y=y, name=name, dfms=dfms, dfms_fp=dfms_fp):
      res = shortcut.run(
          ctx.apply_fn,
          ctx.variables,
          ctx.mesh,
          x,
          y,
          dfms,
          batch_size=int(a.batch_size),
          memory_budget_mb=float(a.memory_budget_mb),
          progress=config.train.progress,
          desc=f"shortcut test on {name}",
      )
      return res, ctx.meta(threshold=float(a.threshold), test_set=name, dfms_fingerprint=dfms_fp)

    art = context.cached(path, "shortcut", fp, compute)
    if parallel.is_main_process():
      artifacts.write_json(
          os.path.splitext(path)[0] + ".json",
          {
              "test_set": name,
              "threshold": float(a.threshold),
              "classes": ctx.class_names,
              **art.arrays,
          },
      )
      print(f"Shortcut test on {name} with DFMs at {100 * float(a.threshold):g}%:")
      print(shortcut.table(art.arrays, ctx.class_names))
      subset = shortcut.subset_view(art.arrays)
      if subset is not None:  # a class map: the model's outputs beyond the classes left out
        print("Restricted to the classes' outputs (above: over all the model's outputs):")
        print(shortcut.table(subset, ctx.class_names))
    out = out or art
  return out
