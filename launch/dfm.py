"""Ranks DFM candidates of a trained run (analysis/scores.npz, analysis/dfm.npz); resumable.

  python launch/dfm.py --config=configs/synthetic.py:syn1_small --workdir=runs/syn1_small \
      --config.analysis.patch_size=1

Choose the checkpoint with --config.analysis.checkpoint=best|latest|STEP.
"""

from freqjax import cli
from freqjax.stages import dfm

cli.define_flags()


def main(argv):
  del argv
  dfm.run(cli.get_config(), cli.workdir())


if __name__ == "__main__":
  cli.run(main)
