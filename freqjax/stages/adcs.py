"""ADCS stage: analysis/adcs.npz and figures/adcs.png from the run's test set."""

from __future__ import annotations

import numpy as np

from freqjax import artifacts, parallel, plotting
from freqjax.spectral import adcs as adcs_lib
from freqjax.stages import context


@context.stage
def run(config, workdir, ctx: context.Context | None = None) -> artifacts.Artifact:
  ctx = context.ensure(config, workdir, ctx)
  variant = config.analysis.adcs
  num_classes = len(ctx.class_names)

  def compute():
    batches = (
        b
        for b, _ in parallel.padded_batches(
            {"image": ctx.images, "label": ctx.labels}, int(config.analysis.batch_size), ctx.mesh
        )
    )
    sums, counts = adcs_lib.class_amplitude_sums(batches, num_classes, ctx.mesh, variant)
    maps = adcs_lib.adcs_from_sums(sums, counts, variant)
    mean = sums / np.maximum(counts, 1)[:, None, None, None]
    return (
        {"adcs": maps, "class_mean_amplitude": mean, "counts": counts},
        ctx.meta(variant=variant),
    )

  def figure(arrays):
    plotting.adcs(
        arrays["adcs"],
        ctx.class_names,
        ctx.wd.figure("adcs.png"),
        title=f"ADCS ({variant}) — {config.data.name}",
    )

  return context.cached(
      ctx.wd.artifact("adcs"), "adcs", ctx.fingerprint("adcs", variant), compute, figure
  )
