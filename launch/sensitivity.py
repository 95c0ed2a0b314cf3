"""The Fourier sensitivity of a trained run (writes analysis/sensitivity.npz and
figures/sensitivity.png): per class, the mean |F(grad_x L)|^2 over its test images.

  python launch/sensitivity.py --config=configs/synthetic.py:syn1_small --workdir=runs/syn1_small

Differentiate the true-class logit instead of the loss: --config.analysis.sensitivity.target=logit.
"""

from freqjax import cli
from freqjax.stages import sensitivity

cli.define_flags()


def main(argv):
  del argv
  sensitivity.run(cli.get_config(), cli.workdir())


if __name__ == "__main__":
  cli.run(main)
