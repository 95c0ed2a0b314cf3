"""Runs the whole experiment (prepare, train, ADCS, DFMs, shortcut test, figures, report).

  python launch/pipeline.py --config=configs/synthetic.py:syn1_small --workdir=runs/syn1_small

Choose the checkpoint with --config.analysis.checkpoint=best|latest|STEP. A workdir that holds
another run is refused; --move_aside renames it to <workdir>.moved-<time> (never deletes it).
"""

from freqjax import cli, pipeline

cli.define_flags()


def main(argv):
  del argv
  pipeline.run_pipeline(cli.get_config(), cli.workdir(), move_aside=cli.move_aside())


if __name__ == "__main__":
  cli.run(main)
