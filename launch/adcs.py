"""Computes ADCS of a config's test split — the data alone, no model or checkpoint needed
(writes <workdir>/analysis/adcs.npz and figures/adcs.png; prepares the dataset if needed).

  python launch/adcs.py --config=configs/tiny_imagenet10.py --workdir=runs/tiny_adcs

The authors' variant in their class order (sorted folder names, as ImageFolder), to compare
with published ADCS figures: --config.analysis.adcs=official
--config.analysis.adcs_class_order=sorted.
"""

from freqjax import cli
from freqjax.stages import adcs

cli.define_flags()


def main(argv):
  del argv
  adcs.run(cli.get_config(), cli.workdir())


if __name__ == "__main__":
  cli.run(main)
