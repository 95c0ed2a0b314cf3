"""Compares two finished runs, e.g. before and after DFM-X mitigation (reads artifacts only).

  python launch/compare.py --before=runs/syn1_small --after=runs/syn1_small_dfmx \
      --figure=runs/syn1_small_dfmx/figures/before_after.png

The run after must have been tested on the DFMs of the run before
(--config.analysis.shortcut_dfms=<before> when it was analysed). Prints the table; the last
line is one JSON object with the numbers.
"""

import json

from absl import flags

from freqjax import cli, errors
from freqjax.evaluation import compare

flags.DEFINE_string("before", None, "Workdir of the run before (whose DFMs are the shortcut).")
flags.DEFINE_string("after", None, "Workdir of the run after (e.g. trained with DFM-X).")
flags.DEFINE_string("figure", "", "Optional path of a before/after figure (.png).")
cli.define_flags(config=False, workdir=False)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.before or not FLAGS.after:
    raise errors.ConfigError("--before and --after are required (two workdirs).")
  text, result = compare.before_after(FLAGS.before, FLAGS.after, FLAGS.figure or None)
  print(text)
  print(json.dumps(result))


if __name__ == "__main__":
  cli.run(main)
