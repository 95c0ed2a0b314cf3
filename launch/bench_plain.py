"""Plain inference throughput (img/s) under this process's XLA flags and thread settings.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 python launch/bench_plain.py --width=1

Random weights and images. Prints a table and, last, one JSON line (key `plain`).
"""

from absl import flags

from freqjax import bench, cli

_MODEL = flags.DEFINE_string("model", "resnet18", "Registry name.")
_WIDTH = flags.DEFINE_float("width", 1.0, "Width multiplier.")
_SIZE = flags.DEFINE_integer("image_size", 32, "Image size.")
_BATCH = flags.DEFINE_integer("batch", 100, "Images per forward pass (all devices).")
_DEVICES = flags.DEFINE_integer("num_devices", 0, "Devices (0: all).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")


def main(argv):
  del argv
  r = bench.plain_throughput(
      _MODEL.value, _WIDTH.value, _SIZE.value, _BATCH.value, _DEVICES.value, _DTYPE.value
  )
  bench.emit(
      "Plain inference throughput",
      [
          ("model", f"{r['model']} ×{r['width_multiplier']}, {r['image_size']} px, {r['dtype']}"),
          ("batch / devices", f"{r['batch']} / {r['devices']}"),
          ("XLA_FLAGS", r["xla_flags"] or "(none)"),
          ("img/s", f"{r['plain']:.1f}"),
      ],
      r,
  )


if __name__ == "__main__":
  cli.run(main)
