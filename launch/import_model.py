r"""Imports a model trained elsewhere (PyTorch .ckpt/.pth/.pt or .safetensors) into a workdir.

  python launch/import_model.py --from=official_resnet18_c10.ckpt --arch=resnet18 \
      --workdir=runs/official_r18 --config=configs/tiny_imagenet10.py \
      --config.data.image_size=32 --check=official_resnet18_c10_io.npz
  python launch/pipeline.py --config=configs/imported.py:runs/official_r18 \
      --workdir=runs/official_r18

The file's naming (the authors' backbone/, torchvision, timm) is detected from its keys; no
code in the file is run. --config (optional) gives the data and analysis settings to record;
--image_size, --mean, --std and --class_names fill in what the file does not hold. The last
line printed is one JSON object (with max_rel_logit_error when --check is given; above
--check_tolerance the model was not reproduced: exit code 2, nothing written). A ViT whose
width, depth, patch size or MLP ratio is not the --arch's is refused, naming the --arch that
fits (its head count, which the weights do not hold, is the --arch's).
"""

import json

from absl import flags

from freqjax import cli
from freqjax.interop import importer

flags.DEFINE_string("from", None, "The checkpoint file (.ckpt, .pth, .pt or .safetensors).")
flags.DEFINE_string("arch", None, "A model registry name, e.g. resnet18, vit_tiny_patch16_224.")
flags.DEFINE_integer("image_size", None, "Input size, where the file does not say it.")
flags.DEFINE_list("mean", None, "Normalisation mean R,G,B (default: the config's).")
flags.DEFINE_list("std", None, "Normalisation std R,G,B (default: the config's).")
flags.DEFINE_list("class_names", None, "Class names in output order (default: the config's).")
flags.DEFINE_string("check", None, "An .npz with x_nchw and logits to compare against.")
flags.DEFINE_float(
    "check_tolerance",
    1e-4,
    "With --check: the largest max relative logit error accepted; above it the import fails "
    "(exit code 2) and nothing is written.",
)
cli.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  result = importer.import_model(
      cli.required("from"),
      cli.required("arch"),
      cli.workdir(),
      config=FLAGS.config,
      image_size=FLAGS.image_size,
      mean=FLAGS.mean,
      std=FLAGS.std,
      class_names=FLAGS.class_names,
      check=FLAGS.check,
      check_tolerance=FLAGS.check_tolerance,
      move_aside=cli.move_aside(),
  )
  print(importer.describe(result))
  print(json.dumps(result))


if __name__ == "__main__":
  cli.run(main)
