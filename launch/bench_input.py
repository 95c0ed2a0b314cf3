"""Input pipeline throughput next to the training step's, for the same config.

  python launch/bench_input.py --config=configs/synthetic.py:syn1_small
  python launch/bench_input.py --config=configs/tiny_imagenet10.py

The pipeline must feed images faster than the training step consumes them (ratio > 1).
"""

from absl import flags

from freqjax import bench, cli

cli.define_flags(workdir=False)
_BATCHES = flags.DEFINE_integer("batches", 50, "Timed batches of the input pipeline.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed training steps.")


def main(argv):
  del argv
  config = cli.get_config()
  inp = bench.input_throughput(config, _BATCHES.value)
  train = bench.train_throughput(config, _STEPS.value)
  ratio = inp["images_per_second"] / train["images_per_second"]
  figures = {
      "input_images_per_second": inp["images_per_second"],
      "train_images_per_second": train["images_per_second"],
      "input_vs_train": ratio,
      "global_batch": inp["global_batch"],
      "source": inp["source"],
      "devices": train["devices"],
  }
  bench.emit(
      "Input pipeline vs training step",
      [
          ("input pipeline images/s", f"{inp['images_per_second']:.0f} ({inp['source']})"),
          ("training step images/s", f"{train['images_per_second']:.1f}"),
          (
              "input / training",
              f"{ratio:.1f}× ({'not the bottleneck' if ratio > 1 else 'BOTTLENECK'})",
          ),
      ],
      figures,
  )


if __name__ == "__main__":
  cli.run(main)
