"""Computes ADCS of a trained run's test split (writes analysis/adcs.npz and figures/adcs.png).

  python launch/adcs.py --config=configs/synthetic.py:syn1_small --workdir=runs/syn1_small

Choose the checkpoint with --config.analysis.checkpoint=best|latest|STEP.
"""

from freqjax import cli
from freqjax.stages import adcs

cli.define_flags()


def main(argv):
  del argv
  adcs.run(cli.get_config(), cli.workdir())


if __name__ == "__main__":
  cli.run(main)
