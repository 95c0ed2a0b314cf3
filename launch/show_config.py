"""Prints every config field with its value and one-line meaning, e.g.

  python launch/show_config.py --config=configs/folder.py:root=/data/mine
  python launch/show_config.py --config=configs/synthetic.py:syn1_small --config.train.lr=0.1

Each field can be overridden in any launcher as --config.<field>=<value>.
"""

from freqjax import cli, config as config_lib

cli.define_flags(workdir=False)


def main(argv):
  del argv
  print("\n".join(config_lib.describe(cli.get_config())))


if __name__ == "__main__":
  cli.run(main)
