"""DFM-filtered TPR/FPR of a trained run with its DFMs (analysis/shortcut.npz).

  python launch/shortcut_test.py --config=configs/synthetic.py:syn1_small --workdir=runs/syn1_small

Choose the checkpoint with --config.analysis.checkpoint=best|latest|STEP.
"""

from freqjax import cli
from freqjax.stages import shortcut

cli.define_flags()


def main(argv):
  del argv
  shortcut.run(cli.get_config(), cli.workdir())


if __name__ == "__main__":
  cli.run(main)
