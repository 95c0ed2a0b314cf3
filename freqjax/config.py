"""The one experiment-config schema that every file in configs/ fills in.

Configs are `ml_collections.ConfigDict`s. `base_config()` holds every field with its default
(the official code's hyper-parameters); the files in `configs/` start from it and set what
their experiment needs. Launchers lock the config, so a misspelt override fails with the list
of valid keys (`check_overrides`).
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
import re
from collections.abc import Iterable, Sequence

import ml_collections

from freqjax import classmap, errors

# Where the repository's sibling `shared/` folder is (real images for tests and examples).
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

SYNTHETIC_MEAN = (0.498, 0.498, 0.498)
SYNTHETIC_STD = (0.172, 0.173042, 0.173)
IMAGENET10_MEAN = (0.479838, 0.470448, 0.429404)
IMAGENET10_STD = (0.258143, 0.252662, 0.272406)
# ImageNet-10 in the official index order: (name, WNID).
IMAGENET10_CLASSES = (
    ("airliner", "n02690373"),
    ("beach wagon", "n02814533"),
    ("hummingbird", "n01833805"),
    ("Siamese cat", "n02123597"),
    ("ox", "n02403003"),
    ("golden retriever", "n02099601"),
    ("tailed frog", "n01644900"),
    ("zebra", "n02391049"),
    ("container ship", "n03095699"),
    ("trailer truck", "n04467665"),
)
# Radial bands of the synthetic specification: [lo, hi) in cycles per image.
SYNTHETIC_BANDS = ((0.0, 4.0), (4.0, 8.0), (8.0, 12.0), (12.0, math.inf))


def default_data_dir() -> str:
  """Where prepared datasets live unless `data.data_dir` says otherwise."""
  return os.environ.get(
      "FREQJAX_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "freqjax", "datasets")
  )


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # model init, data order, augmentation and dropout

  c.data = ml_collections.ConfigDict()
  c.data.kind = "synthetic"  # 'synthetic' | 'folder'
  c.data.name = "syn1_small"  # a label for logs and artifacts
  c.data.data_dir = ""  # prepared datasets; '' = $FREQJAX_DATA_DIR or ~/.cache/freqjax/datasets
  c.data.image_size = 32  # input size in pixels (square)
  c.data.num_classes = 4  # number of classes (= model outputs unless model.num_outputs)
  c.data.class_names = ("C0", "C1", "C2", "C3")  # one name per class, in class-index order
  # The model output of each class, in class-index order, for a model with more outputs than
  # classes (freqjax/classmap.py); () = the identity (class k is output k), or for a
  # 1000-output model with class folders named by ImageNet synset, their ImageNet-1k indices.
  c.data.model_classes = ()
  c.data.mean = SYNTHETIC_MEAN  # per-channel normalisation mean (RGB, in [0, 1])
  c.data.std = SYNTHETIC_STD  # per-channel normalisation std (RGB)
  c.data.val_fraction = 0.1  # seeded 90/10 train/validation split of the train split
  c.data.in_memory_mb = 2048  # splits smaller than this are read into memory once
  c.data.synthetic = synthetic_defaults()
  # Folder datasets: <manual_dir>/<split>/<class folder>/<image>.
  c.data.manual_dir = ""
  c.data.class_folders = ()  # folder per class, in class-index order (WNID or name)
  c.data.train_split = "train"  # split folder used for training (and validation)
  c.data.test_split = "val"  # split folder used as the test set
  c.data.storage_size = 0  # train images stored at this size (0 = image_size)
  c.data.test_manual_dir = ""  # root of the test split, if not manual_dir (e.g. SIN studies)
  # A class folder in a split that no configured class claims: 'warn' (listed in the
  # prepared dataset's metadata.json as unlisted_class_folders) or 'error'.
  c.data.unlisted_classes = "warn"
  c.data.min_source_size = 16  # source images smaller than this (either side) are warned
  #                             about and listed in metadata.json (small_files)

  c.augment = ml_collections.ConfigDict()
  c.augment.crop = "pad_crop"  # 'pad_crop' | 'random_resized_crop' | 'none'
  c.augment.pad = 4  # pixels of padding before the random crop
  c.augment.pad_mode = "zeros"  # 'zeros' (torchvision Pad) | 'mean' | 'wrap' (circular)
  c.augment.flip = True  # random horizontal flip
  c.augment.rrc_scale = (0.08, 1.0)  # RandomResizedCrop area range
  c.augment.rrc_ratio = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop aspect-ratio range
  c.augment.policy = "none"  # 'none' | 'autoaugment' | 'augmix' (after the crop)
  # DFM-X (Wang et al., ICCV 2023 workshop): each training image draws a class uniformly; if
  # it is another class, with probability p the (normalised) image is filtered by that
  # class's DFM (DC kept), as the authors' code does. dfms: a finished run's workdir or its
  # analysis/dfm.npz, or the authors' pickle ({class: 0/1 map}); '' = off.
  c.augment.dfmx = ml_collections.ConfigDict()
  c.augment.dfmx.dfms = ""  # DFM-X's DFMs: a run's workdir, its dfm.npz, or a .pkl; '' = off
  c.augment.dfmx.p = 0.3  # probability of filtering when another class is drawn
  c.augment.dfmx.threshold = 0.05  # which DFM of a dfm.npz (one of its thresholds)

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet18"  # a models registry name (resnet18, vgg16, vit_tiny_patch16_224, ...)
  c.model.width_multiplier = 1.0  # scales every layer's channels (0.25 = width 16 ResNets)
  c.model.stem = "cifar"  # 'cifar' (paper) | 'imagenet'
  c.model.dtype = "float32"  # 'float32' | 'bfloat16' (compute; parameters stay float32)
  c.model.dropout_rate = 0.5  # AlexNet only
  c.model.num_outputs = 0  # the model's outputs (logits); 0 = data.num_classes. An import sets
  #                          it from the file (e.g. 1000, with data.model_classes)
  # ViTs imported at another image size than the checkpoint's: False = an error naming both
  # sizes; True = resample the position embeddings (bicubic, with a warning).
  c.model.interpolate_pos_embed = False

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64  # global batch, over all devices and processes
  c.train.epochs = 200  # epochs to train
  c.train.max_steps = -1  # stop after this many steps (-1: run all epochs)
  c.train.lr = 0.01  # initial SGD learning rate
  c.train.momentum = 0.9  # SGD momentum
  c.train.nesterov = True  # Nesterov momentum
  c.train.weight_decay = 1e-4  # L2 added to the gradient, as torch.optim.SGD does
  c.train.plateau_factor = 0.1  # ReduceLROnPlateau: lr factor
  c.train.plateau_patience = 10  # ReduceLROnPlateau: epochs without improvement
  c.train.plateau_threshold = 1e-4  # relative, as torch's ReduceLROnPlateau
  c.train.eval_batch_size = 256  # global batch for evaluation
  c.train.keep_checkpoints = 3  # the last N, plus the best by validation loss
  c.train.log_every_steps = 10  # also how often the loss is checked for NaN/inf (one host
  #                               sync each), besides every epoch end
  c.train.num_devices = 0  # 0 = every local device
  c.train.prefetch = 2  # batches prepared ahead
  c.train.progress = True  # show a progress bar

  c.dynamics = ml_collections.ConfigDict()
  c.dynamics.every_steps = 0  # 0 = off; evaluate band-limited test views every N steps
  c.dynamics.until_step = 500  # last step evaluated
  # test views evaluated: full, keep_b<k>, remove_b<k>
  c.dynamics.views = ("full", "keep_b1", "keep_b2", "keep_b3", "keep_b4")
  c.dynamics.bands = SYNTHETIC_BANDS  # radial bands [lo, hi) of the keep_b<k>/remove_b<k> views
  c.dynamics.threshold = 0.5  # a class is learned at the first step with TPR - FPR >= this

  c.analysis = ml_collections.ConfigDict()
  c.analysis.checkpoint = "best"  # 'best' | 'latest' | a step number
  # Which data the analysis launchers may use: 'run' (the run's own: a config whose dataset,
  # normalisation, classes, image size or seed differ from run.json is refused) | 'config'
  # (this config's data section on purpose, even where it differs; the artifacts record it).
  c.analysis.data = "run"
  c.analysis.adcs = "paper"  # 'paper' | 'official'
  c.analysis.adcs_class_order = "config"  # 'config' | 'sorted' (folder names, as the
  #                                         authors' ImageFolder: their class indices)
  c.analysis.patch_size = 1  # DFM candidate: a p×p patch of the spectrum
  c.analysis.candidates = "paired"  # 'paired' (true conjugate pairs) | 'official'
  # How DFMs are searched: 'exhaustive' (every candidate; the reference) | 'auto' | 'screened' |
  # 'coarse_to_fine' | 'hfss' (see freqjax/spectral/search/ and the README's table).
  c.analysis.search = "exhaustive"
  # 'auto' (freqjax/spectral/search/_auto.py): exact scores, raced over the class's images, in
  # the order of a bound until the exhaustive DFM's score mass it may have missed is bounded
  # below `tolerance`.
  c.analysis.auto = ml_collections.ConfigDict()
  c.analysis.auto.tolerance = 0.05  # the missed-mass bound to reach, in (0, 1)
  c.analysis.auto.multiple = 1.0  # first scored exactly: the screen's top, × the DFM's size
  c.analysis.auto.audit = 20  # and this many random candidates of each energy stratum
  # and every candidate of the highest-energy strata that together hold at most this
  # fraction of the candidates (where first order fails on photos: low and axis frequencies)
  c.analysis.auto.dense = 0.2
  c.analysis.auto.strata = 6  # energy strata (factors of 4 below the largest removed energy)
  c.analysis.auto.competitors = 2  # the screen's linearised logits: true, these, the rest's LSE
  c.analysis.auto.block = 0.05  # then rounds of this × the DFM's size × the class's images
  c.analysis.auto.budget = 1.0  # at most this fraction of the candidate-images scored exactly
  # Races over images: the class's images are drawn at random with replacement, a share
  # `lean` of the draw probability in proportion to the screen's size on each image (its
  # summed |first-order change|: the images a removal moves most), the rest uniform. A
  # candidate is scored on the images of its first `first_images` draws, then of twice as
  # many, ... then on all, while its confidence interval (a Hansen-Hurwitz estimate ± z
  # standard errors, Student-t widened) still matters to the bound. A class of fewer than
  # 4 × first_images images is not raced.
  c.analysis.auto.first_images = 8
  c.analysis.auto.lean = 0.8
  c.analysis.auto.z = 3.0
  # Also stop once the bound is within the ranking's own split-half agreement (the median
  # over random halvings, from the per-image losses scored): the class's images
  # resolve the DFM no better.
  c.analysis.auto.floor = True
  c.analysis.screen = ml_collections.ConfigDict()
  c.analysis.screen.target = "linear"  # 'linear': the cross-entropy of the logits changed to
  #                                        first order (a backward pass per class) | the
  #                                        first-order change of 'ce', 'logit' or 'margin'
  #                                        (true logit's lead over the best other)
  c.analysis.screen.multiple = 1.25  # candidates scored exactly, × the DFM's candidates
  c.analysis.screen.extend = 0.0  # then blocks of this × the DFM's, in the screen's order,
  #                                 while a block brings a candidate into the DFM (0: off)
  c.analysis.screen.max_multiple = 3.0  # at most this × the DFM's candidates (before the audit)
  c.analysis.screen.audit = 8  # random others scored exactly, to estimate what was missed
  c.analysis.screen.steps = 1  # 1: the gradient; n > 1: integrated gradients, n points
  c.analysis.coarse_to_fine = ml_collections.ConfigDict()
  c.analysis.coarse_to_fine.levels = ml_collections.config_dict.placeholder(tuple)  # patch
  #                     sizes, coarse to fine, ending at patch_size; None: e.g. (8, 4, 2, 1)
  c.analysis.coarse_to_fine.multiple = 2.0  # refine the best patches covering this × DFM
  # HFSS (CVPR 2025; freqjax/spectral/hfss.py): random keep masks on grids of decreasing cell
  # size, each stage confined to the previous stage's best masks per class.
  c.analysis.hfss = ml_collections.ConfigDict()
  c.analysis.hfss.patch_sizes = ()  # cell side per stage; (): HFSS's, e.g. (8, 4, 2, 1) at 32 px
  c.analysis.hfss.num_masks = 500  # N_B: masks drawn per stage (in triples A, B, C)
  c.analysis.hfss.keep_fraction = 0.8  # P: fraction of the half-grid's cells a mask keeps
  c.analysis.hfss.num_best = 10  # N: best masks kept per class and stage (the output subsets)
  c.analysis.hfss.seed = 42  # the masks' random draws
  c.analysis.hfss.batch_size = 1000  # images per engine group
  c.analysis.hfss.memory_budget_mb = 0  # per-device budget for a chunk; 0 = automatic
  c.analysis.hfss.chunk_size = 0  # masks per chunk; 0 = from the memory budget
  c.analysis.hfss.tpr_subsets = 0  # best subsets per class whose TPR/FPR is measured; 0 = all
  c.analysis.thresholds = (0.01, 0.05, 0.1, 0.2)  # DFM sizes, as fractions of H·W
  c.analysis.threshold = 0.05  # the DFM used for the shortcut test and figures
  c.analysis.memory_budget_mb = 0  # per device, for DFM candidate chunks and the batches of
  #   the shortcut test, Fourier sensitivity and auto's screen; 0 = auto (GPU: 1/4 of its
  #   memory, CPU: 1 GiB)
  c.analysis.batch_size = 256  # images per forward pass outside the DFM engine
  c.analysis.greedy = False  # also run DFM-X's greedy removal
  c.analysis.greedy_tolerance = 6  # greedy removal stops after this many failed steps
  c.analysis.greedy_parallel = 8  # candidates removed per greedy step
  c.analysis.ood_dirs = ()  # folder test sets of the same classes, for OOD shortcut tests
  c.analysis.ood_split = "val"  # split folder of each OOD set
  # Also run the shortcut test with another run's DFMs (its workdir, a dfm.npz or the
  # authors' .pkl; at analysis.threshold): analysis/shortcut_dfms.npz. E.g. a DFM-X run
  # tested on the DFMs of the run it mitigates.
  c.analysis.shortcut_dfms = ""
  # Fourier heat map (Yin et al. 2019): test error with a Fourier basis image of L2 norm eps
  # (per channel, pixel values in [0, 1]) added, per frequency of the half-plane or patch.
  c.analysis.heatmap = ml_collections.ConfigDict()
  c.analysis.heatmap.eps = ml_collections.config_dict.placeholder(float)  # None: 4.0 at 32 px,
  #                                       15.7 at 224 px, log-log interpolated (6.51 at 64 px)
  c.analysis.heatmap.patch_size = ml_collections.config_dict.placeholder(int)  # None: the DFMs'
  c.analysis.heatmap.seed = 0  # the random sign per image and channel
  c.analysis.heatmap.in_pipeline = False  # launch/pipeline.py also makes it (costs about one
  #                                         DFM ranking); launch/heatmap.py always does
  # Fourier sensitivity (Krishnamachari et al. 2023): per class, mean |F(grad_x L)|^2.
  c.analysis.sensitivity = ml_collections.ConfigDict()
  c.analysis.sensitivity.target = "loss"  # 'loss' (cross-entropy) | 'logit' (true class)
  c.analysis.sensitivity.in_pipeline = True  # seconds; launch/sensitivity.py always does
  return c


def synthetic_defaults() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.band = 1  # Syn-k: C3 lives in band B_k
  s.seed = 0  # generator seed
  s.train_per_class = 2000  # train images per class
  s.test_per_class = 500  # test images per class
  s.size = 32  # image size of the generated set
  s.bands = SYNTHETIC_BANDS  # radial bands [lo, hi) in cycles per image
  s.num_control = 6  # control frequencies in the pool
  s.num_distractors = 6  # distractor frequencies in the pool
  s.c3_vocabulary = 6  # frequencies C3 draws from
  s.specials_per_class = 2  # special frequencies of C0 and C1
  s.min_separation = 2  # minimum distance between planted frequencies
  s.control_per_image = 3  # control frequencies per image
  s.distractors_per_image = 2  # distractor frequencies per image
  s.control_amplitude = (0.5, 1.0)  # amplitude range of control frequencies
  s.c3_amplitude = (0.5, 1.0)  # amplitude range of C3's frequencies
  s.special_amplitude = (0.3, 0.6)  # amplitude range of C0/C1's special frequencies
  s.distractor_amplitude = (0.2, 0.5)  # amplitude range of distractors
  s.min_luminance_contrast = 0.3  # minimum contrast of an image
  s.noise_sigma = 0.02  # pixel noise std
  return s


def from_dict(stored: dict) -> ml_collections.ConfigDict:
  """A config from its JSON form (a workdir's config.json): base_config() updated with the
  stored values, JSON lists back to tuples and "inf" back to floats, so it overrides and
  validates like the original."""

  def like(default, value):
    if isinstance(value, list):
      same = isinstance(default, tuple) and len(default) == len(value)
      return tuple(like(default[i] if same else None, v) for i, v in enumerate(value))
    if isinstance(value, str) and value in ("inf", "-inf") and not isinstance(default, str):
      return float(value)
    return value

  def update(node: ml_collections.ConfigDict, values: dict):
    for key, value in values.items():
      default = node.get(key)
      if isinstance(value, dict) and isinstance(default, ml_collections.ConfigDict):
        update(node[key], value)
      else:
        node[key] = like(default, value)

  c = base_config()
  update(c, stored)
  return c


def parse_variant(arg: str | None, valid: Iterable[str]) -> list[str]:
  """Splits a variant string 'a,b' or 'a_b' into tokens; unknown tokens list the valid ones."""
  valid = list(valid)
  tokens = [t for t in re.split(r"[,_+]", arg or "") if t]
  for t in tokens:
    if t not in valid and "=" not in t:
      raise errors.ConfigError(
          f"Unknown config variant {t!r}. Valid variants: {', '.join(valid)} "
          "(combine with commas, e.g. 'syn2,small')."
      )
  return tokens


def check_overrides(config: ml_collections.ConfigDict, argv: Sequence[str]) -> None:
  """Fails on `--config.<path>=` flags that name no field, listing the valid keys there."""
  for arg in argv:
    m = re.match(r"^--?config\.([A-Za-z0-9_.]+)", arg)
    if not m:
      continue
    node, path = config, []
    for key in m.group(1).split("."):
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        where = "config" + "".join(f".{p}" for p in path)
        keys = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise errors.ConfigError(
            f"Unknown config key '{m.group(1)}' ('{key}' is not a field of {where}). "
            f"Valid keys of {where}: {', '.join(keys)}. Fix the spelling of the override."
        )
      node, path = node[key], path + [key]


def divisors(n: int) -> list[int]:
  return [k for k in range(1, int(n) + 1) if n % k == 0]


UNLISTED_POLICIES = ("warn", "error")


def check_folder_options(data_config) -> dict:
  """`data.min_source_size` and `data.unlisted_classes`, checked, as FolderBuilder kwargs."""
  min_size, policy = data_config.min_source_size, data_config.unlisted_classes
  if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
    raise errors.ConfigError(
        f"config.data.min_source_size must be an integer >= 0 (0 = no check), got {min_size!r}."
    )
  if policy not in UNLISTED_POLICIES:
    raise errors.ConfigError(
        f"config.data.unlisted_classes must be one of {', '.join(UNLISTED_POLICIES)}, "
        f"got {policy!r}."
    )
  return {"min_source_size": min_size, "unlisted_classes": policy}


def heatmap_patch(config) -> int:
  """The heat map's patch size: its own, else the DFM ranking's."""
  p = config.analysis.heatmap.patch_size
  return int(config.analysis.patch_size if p is None else p)


def resolve_channel_stats(data_config) -> None:
  """A folder dataset's `mean`/`std` left as () (configs/folder.py unless given): computed from
  its train split at `image_size` (`folder.channel_stats`) and set in place. `validate` calls
  it, once the command-line overrides are applied, so the run's config.json records them."""
  d = data_config
  if d.kind != "folder" or (len(d.mean) and len(d.std)):
    return
  from freqjax.data import folder  # pylint: disable=g-import-not-at-top

  if not d.manual_dir:
    raise errors.ConfigError(
        "config.data.mean/std=() are computed from the train split, but config.data.manual_dir "
        "is empty: set it (e.g. --config.data.manual_dir=/data/mine) or give mean and std."
    )
  split_dir = pathlib.Path(d.manual_dir) / d.train_split
  if not split_dir.is_dir():
    raise errors.DatasetError(
        f"{split_dir} does not exist: config.data.manual_dir must be the dataset root laid out "
        f"as <root>/{d.train_split}/<class folder>/<image>."
    )
  # Each class's folder as the dataset builder finds it (a WNID or name may match a longer one).
  found = folder.match_class_folders(split_dir, d.class_folders or d.class_names, d.class_names)
  names = [f.name for f in found]
  mean, std = folder.channel_stats(d.manual_dir, d.train_split, names, int(d.image_size))
  d.mean, d.std = tuple(d.mean) or mean, tuple(d.std) or std


@functools.lru_cache(maxsize=64)
def _smallest_size_cached(model_items: tuple, num_classes: int, size: int) -> int | None:
  from freqjax import models  # pylint: disable=g-import-not-at-top

  try:
    model = models.from_config(ml_collections.ConfigDict(dict(model_items)), num_classes)
  except ValueError as e:  # an unknown model name or dtype: the message lists the known ones
    raise errors.ConfigError(str(e)) from e
  return size if models.fits(model, size) else models.smallest_image_size(model, size)


def smallest_image_size(model_config, num_classes: int, size: int) -> int | None:
  """`size` if the model runs at `size` px (no feature map of it vanishes), else the smallest
  image size it takes (None: none up to 4096 px). One trace of the model per launch and
  setting (`models.fits`), a few more only when it does not fit."""
  items = tuple(sorted(model_config.to_dict().items()))
  return _smallest_size_cached(items, int(num_classes), int(size))


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every value that would otherwise fail late (or train silently wrong), before any
  work starts; raises ConfigError with a message that says how to fix it. Fills in what the
  config leaves to the data: a folder dataset's mean/std = () (`resolve_channel_stats`)."""
  d, a, t = config.data, config.analysis, config.train

  def fail(msg: str):
    raise errors.ConfigError(msg)

  if d.kind not in ("synthetic", "folder"):
    fail(f"config.data.kind must be 'synthetic' or 'folder', got {d.kind!r}.")
  if int(d.num_classes) < 2:
    need = f"config.data.num_classes={d.num_classes}: a classifier needs at least two classes"
    if d.kind == "folder":
      folders = ", ".join(d.class_folders or d.class_names)
      fail(
          f"{need} (class folders of {os.path.join(d.manual_dir, d.train_split)}: {folders}); "
          "add one to the train split, or list two or more with classes=a+b."
      )
    fail(f"{need}; set it, with one config.data.class_names entry per class.")
  if len(d.class_names) != d.num_classes:
    fail(
        f"config.data.class_names has {len(d.class_names)} names but num_classes is "
        f"{d.num_classes}; give one name per class."
    )
  if d.kind == "folder" and d.class_folders and len(d.class_folders) != d.num_classes:
    fail(
        f"config.data.class_folders lists {len(d.class_folders)} folders for "
        f"{d.num_classes} classes; give one folder per class, in class-index order."
    )
  check_folder_options(d)
  classmap.resolve(config)  # the model output of each class (fills it in by synset)
  if not int(d.image_size) >= 1:
    fail(f"config.data.image_size={d.image_size} must be a positive number of pixels.")
  resolve_channel_stats(d)
  for key in ("mean", "std"):
    if len(d[key]) != 3:
      fail(
          f"config.data.{key}={tuple(d[key])} needs three numbers (R, G, B); () (computed from "
          "the train split) works for folder datasets only."
      )
  if not 0.0 <= float(d.val_fraction) < 1.0:
    fail(f"config.data.val_fraction={d.val_fraction} must lie in [0, 1).")
  if not (math.isfinite(t.lr) and t.lr > 0):
    fail(
        f"config.train.lr={t.lr} must be a positive, finite learning rate (the paper uses " "0.01)."
    )
  if not 0.0 <= float(t.momentum) < 1.0:
    fail(f"config.train.momentum={t.momentum} must lie in [0, 1) (the paper uses 0.9).")
  if not (math.isfinite(t.weight_decay) and t.weight_decay >= 0):
    fail(f"config.train.weight_decay={t.weight_decay} must be >= 0.")
  for key in ("batch_size", "eval_batch_size", "epochs", "keep_checkpoints", "log_every_steps"):
    if int(t[key]) < 1:
      fail(f"config.train.{key}={t[key]} must be a positive whole number.")
  vit_patch = re.match(r"vit_\w+_patch(\d+)_", str(config.model.name))
  if vit_patch and int(d.image_size) % int(vit_patch.group(1)):
    p = int(vit_patch.group(1))
    fail(
        f"config.data.image_size={d.image_size} is not a multiple of {config.model.name}'s "
        f"{p}×{p} patches; use e.g. {max(p, int(d.image_size) // p * p)} or "
        f"{(int(d.image_size) // p + 1) * p}."
    )
  if config.model.stem not in ("cifar", "imagenet"):
    fail(f"config.model.stem={config.model.stem!r}; use 'cifar' or 'imagenet'.")
  if not vit_patch:  # ViTs: the patch check above
    m, size = config.model, int(d.image_size)
    smallest = smallest_image_size(m, d.num_classes, size)
    model = f"{m.name} ({m.stem} stem)" if m.name.startswith("resnet") else m.name
    if smallest is None:
      fail(f"{model} leaves an empty feature map at every image size up to 4096 px.")
    if smallest != size:
      fail(
          f"config.data.image_size={size} is too small for {model}: its downsampling shrinks "
          f"the feature map to nothing (training would diverge at once); it takes {smallest} "
          f"px or more, e.g. --config.data.image_size={smallest}."
      )
  if a.data not in ("run", "config"):
    fail(
        f"config.analysis.data={a.data!r}: use 'run' (the run's own data) or 'config' (this "
        "config's data section, on purpose, even where it differs from the run's)."
    )
  if int(a.batch_size) < 1:
    fail(f"config.analysis.batch_size={a.batch_size} must be a positive whole number.")
  size = int(d.image_size)
  if int(a.patch_size) < 1 or size % int(a.patch_size):
    fail(
        f"config.analysis.patch_size={a.patch_size} must be a divisor of the image size "
        f"{size}: one of {', '.join(map(str, divisors(size)))}."
    )
  thresholds = [float(x) for x in a.thresholds]
  for x in thresholds + [float(a.threshold)]:
    if not 0.0 < x <= 1.0:
      fail(f"DFM thresholds must lie in (0, 1]; got {x}. Use e.g. 0.05 for 5%.")
  if not any(abs(x - float(a.threshold)) < 1e-9 for x in thresholds):
    fail(
        f"config.analysis.threshold={a.threshold} (the DFM used by the shortcut test) is not "
        f"in config.analysis.thresholds={tuple(thresholds)}; add it there, e.g. "
        f"--config.analysis.thresholds='{tuple(sorted(thresholds + [float(a.threshold)]))}'."
    )
  if a.candidates not in ("paired", "official"):
    fail(
        f"config.analysis.candidates={a.candidates!r}; use 'paired' (true conjugate pairs) or "
        "'official' (the authors' loop)."
    )
  if a.checkpoint not in ("best", "latest") and not str(a.checkpoint).isdigit():
    fail(f"config.analysis.checkpoint={a.checkpoint!r}; use 'best', 'latest' or a step number.")
  h = a.heatmap
  if h.eps is not None and not (math.isfinite(h.eps) and h.eps > 0):
    fail(
        f"config.analysis.heatmap.eps={h.eps} must be a positive, finite L2 norm (Yin et al. "
        "use 4.0 at 32 px and 15.7 at 224 px; leave it unset for those defaults)."
    )
  hp = heatmap_patch(config)
  if hp < 1 or size % hp:
    fail(
        f"config.analysis.heatmap.patch_size={hp} must be a divisor of the image size "
        f"{size}: one of {', '.join(map(str, divisors(size)))}."
    )
  from freqjax.spectral import search  # pylint: disable=g-import-not-at-top

  search.validate(config)
  if a.adcs not in ("paper", "official"):
    fail(f"config.analysis.adcs={a.adcs!r}; use 'paper' or 'official'.")
  if a.adcs_class_order not in ("config", "sorted"):
    fail(f"config.analysis.adcs_class_order={a.adcs_class_order!r}; use 'config' or 'sorted'.")
  if a.sensitivity.target not in ("loss", "logit"):
    fail(f"config.analysis.sensitivity.target={a.sensitivity.target!r}; use 'loss' or 'logit'.")
  x = config.augment.dfmx
  if not (math.isfinite(x.p) and 0.0 <= x.p <= 1.0):
    fail(f"config.augment.dfmx.p={x.p} must be a probability in [0, 1] (DFM-X uses 0.3).")
  if x.dfms and not 0.0 < float(x.threshold) <= 1.0:
    fail(f"config.augment.dfmx.threshold={x.threshold} must lie in (0, 1], e.g. 0.05.")
  if config.augment.crop not in ("pad_crop", "random_resized_crop", "none"):
    fail(
        f"config.augment.crop={config.augment.crop!r}; use 'pad_crop', "
        "'random_resized_crop' or 'none'."
    )
  if config.augment.policy not in ("none", "autoaugment", "augmix"):
    fail(
        f"config.augment.policy={config.augment.policy!r}; use 'none', 'autoaugment' or "
        "'augmix'."
    )


def field_help() -> dict[str, str]:
  """{'train.lr': 'its comment in base_config()'}: the one-line meaning of each field, read
  from the comments beside the assignments in this module's source."""
  import inspect  # pylint: disable=g-import-not-at-top

  out, last, above = {}, None, []
  source = inspect.getsource(base_config) + inspect.getsource(synthetic_defaults)
  for line in source.splitlines():
    m = re.match(r"\s*([cs])\.([\w.]+)\s*=\s*[^#]*?(?:#\s*(.*))?$", line)
    if m:
      path = m.group(2) if m.group(1) == "c" else f"data.synthetic.{m.group(2)}"
      text = m.group(3) or " ".join(above)
      if text:
        out[path] = text.strip()
      last, above = path, []
      continue
    cont = re.match(r"\s*#(\s*)(.*)$", line)
    if cont and len(cont.group(1)) >= 5 and last in out:  # an inline comment, continued
      out[last] += " " + cont.group(2).strip()
    elif cont:  # a comment above the next field
      above.append(cont.group(2).strip())
      last = None
    else:
      last, above = None, []
  return out


def describe(config: ml_collections.ConfigDict) -> list[str]:
  """One line per field: `path = value  # meaning` (the value as this config sets it)."""
  helps, lines = field_help(), []

  def walk(node, prefix):
    for key in sorted(node.keys()):
      value, path = node[key], f"{prefix}{key}"
      if isinstance(value, ml_collections.ConfigDict):
        walk(value, path + ".")
      else:
        meaning = f"  # {helps[path]}" if path in helps else ""
        lines.append(f"{path} = {value!r}{meaning}")

  walk(config, "")
  return lines
