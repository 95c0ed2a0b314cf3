"""Fast DFM searches against the exhaustive ranking, on a trained run.

  python launch/bench_search.py --config=configs/synthetic.py:syn1_small \
      --workdir=runs/syn1_small
  python launch/bench_search.py --config=configs/tiny_imagenet10.py --workdir=runs/tin10_base \
      --config.train.epochs=6 --config.analysis.patch_size=1 --images_per_class=10

For each method: forward-equivalents (a backward pass counts as two forwards) and their ratio
to the exhaustive ranking's, wall time, and per class the top-5 % DFM's exhaustive score mass,
its IoU with the exhaustive DFM (top 5 % and 1 %), planted recall (synthetic data) and the
shortcut test's TPR/FPR differences. Last line: one JSON object (keys exhaustive_forwards,
<method>_speedup, <method>_mass5 (smallest over classes), <method>_iou5 (mean),
<method>_max_tpr_diff, <method>_max_fpr_diff, ...). Results are kept in
<workdir>/analysis/bench_search/ (a rerun reuses them).
"""

from absl import flags

from freqjax import bench, cli
from freqjax.stages import context

cli.define_flags()
_METHODS = flags.DEFINE_list(
    "methods",
    ["auto", "screened", "hfss"],
    "Methods to compare (any search method but exhaustive; hfss_scaled: HFSS with its mask "
    "count scaled from 224 px to the image size).",
)
_TARGETS = flags.DEFINE_list(
    "screen_targets", [], "Also the screen with these targets (ce, logit, margin)."
)
_PER_CLASS = flags.DEFINE_integer(
    "images_per_class", 0, "Rank on the first N test images of each class (0: all)."
)


@context.stage
def _compare(config, workdir):
  return bench.search_comparison(config, workdir, _METHODS.value, _TARGETS.value, _PER_CLASS.value)


def main(argv):
  del argv
  r = _compare(cli.get_config(), cli.workdir())
  bench.emit("DFM search methods against the exhaustive ranking", bench.search_table(r), r)


if __name__ == "__main__":
  cli.run(main)
