"""The learning-order experiment on Syn-1..4 (several seeds): which class is learned first?

  python launch/learning_dynamics.py --config=configs/synthetic.py:small --workdir=runs/dynamics

Trains every (band, seed) for config.dynamics.until_step steps, evaluating every
config.dynamics.every_steps steps; writes learning_dynamics.json/.md and one run per pair.
"""

from absl import flags

from freqjax import cli
from freqjax.studies import learning_dynamics

cli.define_flags()
_BANDS = flags.DEFINE_list("bands", ["1", "2", "3", "4"], "Syn-k sets to run.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.")


def main(argv):
  del argv
  learning_dynamics.run(
      cli.get_config(),
      cli.workdir(),
      [int(b) for b in _BANDS.value],
      [int(s) for s in _SEEDS.value],
  )


if __name__ == "__main__":
  cli.run(main)
