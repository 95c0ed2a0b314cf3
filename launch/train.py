"""Trains a model: python launch/train.py --config=configs/synthetic.py:syn1_small --workdir=DIR

Any config field can be overridden, e.g. --config.model.name=resnet50. Rerunning with the
same workdir resumes from the latest checkpoint. A workdir that holds a run of another model,
class set, dataset, seed or image size is refused (nothing written); --move_aside renames
that run to <workdir>.moved-<time> and starts afresh.
"""

from freqjax import cli
from freqjax.training import loop

cli.define_flags()


def main(argv):
  del argv
  loop.train_and_evaluate(cli.get_config(), cli.workdir(), move_aside=cli.move_aside())


if __name__ == "__main__":
  cli.run(main)
