"""Training throughput: images/s of the real training step and XLA's achieved FLOP/s.

  python launch/bench_train.py --config=configs/synthetic.py:syn1_small
  python launch/bench_train.py --config=configs/imagenet10.py:resnet50 \
      --config.train.batch_size=128 --config.model.dtype=bfloat16

Random uint8 images of the config's size (no dataset needed); the table, then one JSON line.
"""

from absl import flags

from freqjax import bench, cli

cli.define_flags(workdir=False)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps after a warm-up step.")


def main(argv):
  del argv
  r = bench.train_throughput(cli.get_config(), _STEPS.value)
  rows = [
      ("model", f"{r['model']} ×{r['width_multiplier']} ({r['dtype']})"),
      ("image size / global batch", f"{r['image_size']} / {r['global_batch']}"),
      ("devices", f"{r['devices']} × {r['platform']}"),
      ("step time", f"{1e3 * r['step_seconds']:.1f} ms"),
      ("training images/s", f"{r['images_per_second']:.1f}"),
  ]
  if "achieved_tflops" in r:
    rows.append(("achieved TFLOP/s (XLA cost analysis)", f"{r['achieved_tflops']:.3f}"))
  bench.emit("Training throughput", rows, r)


if __name__ == "__main__":
  cli.run(main)
