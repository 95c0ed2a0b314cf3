"""Configs: every variant builds and validates; locking; helpful errors."""

import pytest

from freqjax import config as config_lib, errors
from tests.conftest import load_config

VARIANTS = {
    "configs/synthetic.py": ["syn1", "syn2", "syn3", "syn4", "syn1_small", "syn4,small", None],
    "configs/imagenet10.py": [
        "resnet18",
        "resnet50",
        "vgg16",
        "resnet18,autoaugment",
        "resnet50,augmix",
        "vgg16,sin",
        None,
    ],
    "configs/tiny_imagenet10.py": [None, "full"],
}


@pytest.mark.parametrize("spec", [f"{f}:{v}" if v else f for f, vs in VARIANTS.items() for v in vs])
def test_every_variant_builds_and_validates(spec):
  c = load_config(spec)
  config_lib.validate(c)
  assert len(c.data.class_names) == c.data.num_classes


def test_variants_set_what_they_say():
  assert load_config("configs/synthetic.py:syn3").data.synthetic.band == 3
  small = load_config("configs/synthetic.py:syn2_small")
  assert small.data.synthetic.train_per_class == 500 and small.model.width_multiplier == 0.25
  c = load_config("configs/imagenet10.py:resnet50,augmix")
  assert (c.model.name, c.augment.policy, c.data.image_size) == ("resnet50", "augmix", 224)
  assert c.data.class_folders[0] == "n02690373" and c.data.class_names[9] == "trailer truck"
  sin = load_config("configs/imagenet10.py:vgg16,sin")
  assert sin.model.name == "vgg16" and sin.data.name.startswith("imagenet10_sin")


def test_unknown_variant_lists_valid_ones():
  with pytest.raises(ValueError, match=r"Unknown config variant 'syn5'.*syn1, syn2"):
    load_config("configs/synthetic.py:syn5")


def test_overrides_are_checked_against_the_schema():
  c = load_config("configs/synthetic.py:syn1")
  config_lib.check_overrides(c, ["--config.model.name=vgg16", "--config.train.lr=0.1"])
  with pytest.raises(
      ValueError, match=r"'nmae' is not a field of config\.model.*name, num_outputs, stem"
  ):
    config_lib.check_overrides(c, ["--config.model.nmae=vgg16"])
  with pytest.raises(ValueError, match=r"Valid keys of config: analysis, augment, data"):
    config_lib.check_overrides(c, ["--config.trian.lr=0.1"])


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("analysis.threshold", 1.5, r"thresholds must lie in \(0, 1\]"),
        ("analysis.thresholds", (0.0, 0.05), r"thresholds must lie in \(0, 1\]"),
        (
            "analysis.patch_size",
            3,
            r"patch_size=3 must be a divisor of the image size 32: one of " r"1, 2, 4, 8, 16, 32\.",
        ),
        ("analysis.patch_size", 0, r"patch_size=0 must be a divisor of the image size 32"),
        (
            "analysis.thresholds",
            (0.01, 0.1),
            r"threshold=0.05 .* is not in " r"config.analysis.thresholds=\(0.01, 0.1\); add it",
        ),
        ("augment.crop", "center", r"use 'pad_crop'"),
        ("analysis.heatmap.eps", 0.0, r"heatmap.eps=0.0 must be a positive, finite L2 norm"),
        ("analysis.heatmap.eps", -4.0, r"heatmap.eps=-4.0 must be a positive"),
        ("analysis.heatmap.eps", float("inf"), r"heatmap.eps=inf must be a positive, finite"),
        ("analysis.heatmap.patch_size", 5, r"heatmap.patch_size=5 must be a divisor of .* 32"),
        ("analysis.sensitivity.target", "margin", r"use 'loss' or 'logit'"),
        ("augment.dfmx.p", 1.5, r"dfmx.p=1.5 must be a probability in \[0, 1\]"),
        ("augment.dfmx.p", -0.1, r"dfmx.p=-0.1 must be a probability"),
        ("train.lr", -1.0, r"config.train.lr=-1.0 must be a positive, finite learning rate"),
        ("train.lr", 0.0, r"config.train.lr=0.0 must be a positive"),
        ("train.lr", float("nan"), r"config.train.lr=nan must be a positive"),
        ("train.momentum", 1.0, r"config.train.momentum=1.0 must lie in \[0, 1\)"),
        ("train.momentum", -0.1, r"config.train.momentum=-0.1 must lie in \[0, 1\)"),
        ("train.batch_size", 0, r"config.train.batch_size=0 must be a positive whole number"),
        ("train.eval_batch_size", -8, r"config.train.eval_batch_size=-8 must be a positive"),
        ("train.epochs", 0, r"config.train.epochs=0 must be a positive whole number"),
        ("analysis.checkpoint", "bets", r"use 'best', 'latest' or a step number"),
        ("data.num_classes", 1, r"^config.data.num_classes=1: a classifier needs at least two"),
        ("data.num_classes", 0, r"^config.data.num_classes=0: a classifier needs at least two"),
        ("data.mean", (), r"config.data.mean=\(\) needs three numbers .* folder datasets only"),
        ("model.name", "resnet19", r"Unknown model 'resnet19'. Known models: alexnet"),
        ("model.stem", "cifar10", r"config.model.stem='cifar10'; use 'cifar' or 'imagenet'"),
    ],
)
def test_bad_values_fail_with_the_fix(field, value, message):
  """Each rejected before any work starts (the launchers validate first)."""
  c = load_config("configs/synthetic.py:syn1")
  *sections, key = field.split(".")
  node = c
  for section in sections:
    node = node[section]
  node[key] = value
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.validate(c)


def test_every_field_is_listed_with_its_value_and_most_with_a_meaning():
  from freqjax import config as config_lib  # pylint: disable=g-import-not-at-top

  c = config_lib.base_config()
  lines = config_lib.describe(c)
  leaves = [line.split(" = ")[0] for line in lines]
  assert (
      len(leaves) == len(set(leaves)) and "train.lr" in leaves and "data.synthetic.band" in leaves
  )
  assert "model.interpolate_pos_embed = False  # ViTs imported" in "\n".join(lines)
  assert sum("  # " in line for line in lines) > len(lines) // 2
