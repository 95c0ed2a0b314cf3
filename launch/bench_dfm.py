"""DFM engine throughput: engine vs naive one-candidate loop vs plain inference.

  python launch/bench_dfm.py --model=resnet18 --width=0.25 --image_size=32 --patch_size=1
  python launch/bench_dfm.py --model=resnet18 --width=1 --image_size=224 --patch_size=7 \
      --images_per_class=50
  python launch/bench_dfm.py --model=resnet50 --width=1 --stem=imagenet --image_size=224 \
      --patch_size=4 --num_classes=1000 --images_per_class=8 --engine_candidates=32

Random weights and images (rates do not depend on them). Prints a table and, last, one JSON
line with the keys engine, naive, plain, engine_vs_plain, engine_vs_naive (+ context).
"""

from absl import flags

from freqjax import bench, cli

_MODEL = flags.DEFINE_string("model", "resnet18", "Registry name.")
_WIDTH = flags.DEFINE_float("width", 0.25, "Width multiplier.")
_SIZE = flags.DEFINE_integer("image_size", 32, "Image size.")
_PATCH = flags.DEFINE_integer("patch_size", 1, "Candidate patch size.")
_CLASSES = flags.DEFINE_integer("num_classes", 10, "Classes (for the work count).")
_PER_CLASS = flags.DEFINE_integer("images_per_class", 100, "Test images of the ranked class.")
_MODE = flags.DEFINE_enum("candidates", "paired", ["paired", "official"], "Candidate set.")
_NAIVE = flags.DEFINE_integer("naive_candidates", 16, "Candidates timed in the naive loop.")
_ENGINE = flags.DEFINE_integer("engine_candidates", 0, "Candidates timed in the engine (0: all).")
_BUDGET = flags.DEFINE_float("memory_budget_mb", 0, "Per-device memory budget (0: auto).")
_DEVICES = flags.DEFINE_integer("num_devices", 0, "Devices (0: all).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_CHUNK = flags.DEFINE_integer("chunk_candidates", 0, "Fix the engine's chunk (0: its choice).")
_STEM = flags.DEFINE_enum("stem", "cifar", ["cifar", "imagenet"], "ResNet stem (imagenet: 224 px).")


def main(argv):
  del argv
  r = bench.dfm_throughput(
      _MODEL.value,
      _WIDTH.value,
      _SIZE.value,
      _PATCH.value,
      _CLASSES.value,
      _PER_CLASS.value,
      _MODE.value,
      _NAIVE.value,
      _ENGINE.value,
      _BUDGET.value,
      _DEVICES.value,
      _DTYPE.value,
      _CHUNK.value,
      _STEM.value,
  )
  bench.emit(
      "DFM ranking throughput (candidate-images/s)",
      [
          (
              "model",
              f"{r['model']} ×{r['width_multiplier']}, {r['image_size']} px, patch "
              f"{r['patch_size']}, {r['devices']} × {r['platform']}",
          ),
          ("candidates / chunk", f"{r['candidates']} ({r['mode']}) / {r['chunk_candidates']}"),
          ("engine", f"{r['engine']:.0f}"),
          ("naive loop", f"{r['naive']:.0f}"),
          ("plain inference (ceiling)", f"{r['plain']:.0f}"),
          ("engine / plain", f"{r['engine_vs_plain']:.2f}"),
          ("engine / naive", f"{r['engine_vs_naive']:.2f}"),
          (
              "forwards, official code (sorted / shuffled test set)",
              f"{r['official_forwards_sorted_test_set']:,} / "
              f"{r['official_forwards_shuffled_test_set']:,}",
          ),
          ("forwards, freqjax", f"{r['freqjax_forwards']:,}"),
          (
              "engine in the official loop's work (sorted / shuffled)",
              f"{r['engine'] * r['official_work_ratio_sorted']:.0f} / "
              f"{r['engine'] * r['official_work_ratio_shuffled']:.0f} official cand-img/s "
              f"(work ratio {r['official_work_ratio_sorted']:.2f} / "
              f"{r['official_work_ratio_shuffled']:.2f}; the official loop's own speed is "
              "not measured here)",
          ),
          (
              "chunk (candidates)",
              f"{r['chunk_candidates']}"
              + (
                  f" by measurement: {r['chunk_rates']} cand-img/s"
                  if r["chunk_by_measurement"]
                  else " (fixed)"
              ),
          ),
      ],
      r,
  )


if __name__ == "__main__":
  cli.run(main)
