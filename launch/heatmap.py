"""The Fourier heat map of a trained run (writes analysis/heatmap.npz, figures/heatmap.png).

  python launch/heatmap.py --config=configs/synthetic.py:syn1_small --workdir=runs/syn1_small

ε (L2 norm of the added basis image, pixels in [0, 1]): --config.analysis.heatmap.eps=4.0
(unset: 4.0 at 32 px, 15.7 at 224 px); one value per p×p patch:
--config.analysis.heatmap.patch_size=P (unset: config.analysis.patch_size). A killed run
resumes where it stopped.
"""

from freqjax import cli
from freqjax.stages import heatmap

cli.define_flags()


def main(argv):
  del argv
  heatmap.run(cli.get_config(), cli.workdir())


if __name__ == "__main__":
  cli.run(main)
