"""Trains a model: python launch/train.py --config=configs/synthetic.py:syn1_small --workdir=DIR

Any config field can be overridden, e.g. --config.model.name=resnet50. Rerunning with the
same workdir resumes from the latest checkpoint.
"""

from freqjax import cli
from freqjax.training import loop

cli.define_flags()


def main(argv):
  del argv
  loop.train_and_evaluate(cli.get_config(), cli.workdir())


if __name__ == "__main__":
  cli.run(main)
