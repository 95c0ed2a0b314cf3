"""ADCS stage: analysis/adcs.npz and figures/adcs.png from the test split — of the data
alone: no model or checkpoint is needed (as the authors' compute_ADCS.py), so
`launch/adcs.py` runs on a dataset before any training.

`analysis.adcs_class_order='sorted'` orders the classes by folder name (class name for
synthetic data), as torchvision's ImageFolder in the authors' scripts, so that class k of the
artifact and figure is their class k; the default keeps the config's order.
"""

from __future__ import annotations

import numpy as np

from freqjax import artifacts, parallel, plotting
from freqjax.spectral import adcs as adcs_lib
from freqjax.stages import context


def class_order(config) -> list[int]:
  """Indices of the config's classes in the artifact's order."""
  d = config.data
  n = int(d.num_classes)
  if config.analysis.adcs_class_order == "sorted":
    keys = list(d.class_folders) if d.kind == "folder" and d.class_folders else list(d.class_names)
    return sorted(range(n), key=lambda k: keys[k])
  return list(range(n))


@context.stage
def run(config, workdir, ctx: context.Context | None = None) -> artifacts.Artifact:
  ctx = ctx if ctx is not None else context.load_data(config, workdir)
  variant = config.analysis.adcs
  order = class_order(config)
  names = [ctx.class_names[k] for k in order]
  num_classes = len(ctx.class_names)

  def compute():
    bar = parallel.progress(
        total=len(ctx.labels), unit="img", desc="ADCS", disable=not config.train.progress
    )

    def batches():
      for b, n in parallel.padded_batches(
          {"image": ctx.images, "label": ctx.labels}, int(config.analysis.batch_size), ctx.mesh
      ):
        yield b
        bar.update(n)

    sums, counts = adcs_lib.class_amplitude_sums(batches(), num_classes, ctx.mesh, variant)
    bar.close()
    sums, counts = sums[order], counts[order]
    maps = adcs_lib.adcs_from_sums(sums, counts, variant)
    mean = sums / np.maximum(counts, 1)[:, None, None, None]
    meta = ctx.meta(variant=variant, class_order=config.analysis.adcs_class_order)
    meta["classes"] = names
    meta.pop("checkpoint")
    meta.pop("model")
    return {"adcs": maps, "class_mean_amplitude": mean, "counts": counts}, meta

  def figure(arrays):
    plotting.adcs(
        arrays["adcs"],
        names,
        ctx.wd.figure("adcs.png"),
        title=f"ADCS ({variant}) — {config.data.name}",
    )

  fp = ctx.fingerprint("adcs", variant, order, model=False)
  return context.cached(ctx.wd.artifact("adcs"), "adcs", fp, compute, figure)
