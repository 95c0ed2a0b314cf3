"""Fourier sensitivity stage: analysis/sensitivity.npz and figures/sensitivity.png — per class,
the mean power spectrum of the input gradient (one forward and backward per test image)."""

from __future__ import annotations

import numpy as np

from freqjax import artifacts, parallel, plotting
from freqjax.spectral import sensitivity as sens_lib
from freqjax.stages import context


@context.stage
def run(config, workdir, ctx: context.Context | None = None) -> artifacts.Artifact:
  ctx = context.ensure(config, workdir, ctx)
  target = config.analysis.sensitivity.target

  def compute():
    maps, counts = sens_lib.class_sensitivity(
        ctx.apply_fn,
        ctx.variables,
        ctx.mesh,
        ctx.images,
        ctx.labels,
        len(ctx.class_names),
        target=target,
        batch_size=int(config.analysis.batch_size),
        memory_budget_mb=float(config.analysis.memory_budget_mb),
        progress=config.train.progress,
    )
    arrays = {"sensitivity": maps, "radial": sens_lib.radial_average(maps), "counts": counts}
    return arrays, ctx.meta(target=target, fft="unitary (norm='ortho'), summed over channels")

  def figure(arrays):
    plotting.sensitivity(
        arrays["sensitivity"],
        arrays["radial"],
        ctx.class_names,
        ctx.wd.figure("sensitivity.png"),
        title=f"Fourier sensitivity (∇ of the {target}) — {config.data.name}",
    )

  art = context.cached(
      ctx.wd.artifact("sensitivity"), "sensitivity", ctx.fingerprint("sensitivity", target),
      compute, figure,
  )  # fmt: skip
  if parallel.is_main_process():
    print(summary_text(art, ctx.class_names))
  return art


def summary_text(art: artifacts.Artifact, class_names) -> str:
  """Per class, the radius holding the most sensitivity mass and the share below radius 4."""
  radial = art["radial"]
  lines = [f"Fourier sensitivity (∇ of the {art.meta['target']}), by class:"]
  r = sens_lib.radii(art["sensitivity"].shape[-1])
  for c, name in enumerate(class_names):
    m = art["sensitivity"][c]
    low = float(m[r < 4].sum() / max(m.sum(), 1e-300))
    lines.append(
        f"  {name}: peak at radius {int(np.argmax(radial[c]))}, {100 * low:.0f}% of the mass "
        "below radius 4"
    )
  return "\n".join(lines)
