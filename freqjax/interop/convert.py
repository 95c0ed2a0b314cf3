"""PyTorch state dicts <-> freqjax's Flax variables, for the three namings freqjax knows.

Namings (detected from the keys, `detect_naming`):
- 'official': the paper authors' `backbone/` models (github nis-research/nn-frequency-shortcuts):
  ResNet `conv1, bn1, layer<k>.<j>.{conv1,bn1,conv2,bn2[,conv3,bn3],shortcut.0,shortcut.1},
  classifier` (its `features.<i>` keys alias the same tensors and are skipped), VGG
  `features.<i>` conv+BN pairs and `classifier`, AlexNet `features.<i>` and `classifier.{1,4,6}`;
- 'torchvision': ResNets with `downsample.{0,1}` and `fc` (ImageNet stem);
- 'timm': ViTs, names as in `freqjax.models.vit`.

Layouts: a conv weight (O, I, kH, kW) becomes a kernel (kH, kW, I, O); a linear weight (O, I) a
kernel (I, O); BatchNorm weight/bias/running_mean/running_var become params scale/bias and
batch_stats mean/var (`num_batches_tracked` is not used). AlexNet's first linear layer reads
the features flattened in PyTorch's (C, H, W) order; freqjax flattens (H, W, C), so its rows
are permuted. A Lightning checkpoint's `state_dict` is used with its `backbone_model.` (or
`model.`, `module.`) prefix removed.

`to_variables` is strict, like `load_state_dict(strict=True)`: every parameter of the model
must be in the file and every tensor of the file must be used; otherwise a CheckpointError
lists the missing and unexpected names and suggests the architecture that fits best. A tensor
of another shape is an error naming the layer and both shapes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from freqjax import errors, models
from freqjax.interop import safetensors_io, torch_pickle
from freqjax.models import vgg as vgg_lib, vit as vit_lib

NAMINGS = ("official", "torchvision", "timm")
_PREFIXES = ("backbone_model.", "model.", "module.", "_orig_mod.")
_RESNETS = {
    "resnet18": ((2, 2, 2, 2), 1),
    "resnet34": ((3, 4, 6, 3), 1),
    "resnet50": ((3, 4, 6, 3), 4),
    "resnet101": ((3, 4, 23, 3), 4),
}
_LIMIT = 8  # names listed per kind in an error


@dataclasses.dataclass
class Checkpoint:
  """A state dict read from a file: tensors (PyTorch names and layouts) and what else the
  file says about the run (plain values from Lightning's `hyper_parameters`, if any)."""

  path: str
  tensors: dict[str, np.ndarray]
  format: str  # 'lightning' | 'state_dict' | 'safetensors'
  hyper_parameters: dict
  prefix: str = ""


# --------------------------------------------------------------------------- reading ----


def read(path: str) -> Checkpoint:
  """Reads a torch.save zip (.ckpt/.pth/.pt) or a .safetensors file, executing nothing."""
  if not os.path.isfile(path):
    raise errors.CheckpointError(f"Checkpoint file {path} does not exist.")
  if safetensors_io.looks_like_safetensors(path):
    tensors, meta = safetensors_io.load(path)
    return _strip(Checkpoint(path, tensors, "safetensors", dict(meta)))
  if not torch_pickle.is_torch_zip(path):
    raise errors.CheckpointError(
        f"{path} is neither a PyTorch zip checkpoint (torch.save: .pt, .pth, .ckpt) nor a "
        ".safetensors file (or it is truncated)."
    )
  obj = torch_pickle.load(path)
  hp, fmt = {}, "state_dict"
  if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    fmt = "lightning" if "pytorch-lightning_version" in obj else "state_dict"
    hp = _plain(obj.get("hyper_parameters") or {})
    obj = obj["state_dict"]
  elif isinstance(obj, dict):
    for key in ("model_state_dict", "model", "state_dict_ema"):
      if isinstance(obj.get(key), dict):
        obj = obj[key]
        break
  if not isinstance(obj, dict):
    raise errors.CheckpointError(
        f"{path} holds a {type(obj).__name__}, not a state dict: save the model's "
        "state_dict() (a whole pickled model cannot be read without running its code)."
    )
  tensors = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
  if not tensors:
    raise errors.CheckpointError(f"{path} holds no tensors.")
  return _strip(Checkpoint(path, tensors, fmt, hp))


def _plain(d: dict) -> dict:
  """The JSON-able values of a dict (numbers, strings, lists of them); the rest dropped."""
  ok = lambda v: isinstance(v, (int, float, str, bool)) or (
      isinstance(v, (list, tuple)) and all(isinstance(x, (int, float, str)) for x in v)
  )
  return {str(k): v for k, v in d.items() if ok(v)}


def _strip(ck: Checkpoint) -> Checkpoint:
  prefix = ""
  while True:
    p = next((p for p in _PREFIXES if all(k.startswith(prefix + p) for k in ck.tensors)), None)
    if p is None:
      break
    prefix += p
  if prefix:
    ck.tensors = {k[len(prefix) :]: v for k, v in ck.tensors.items()}
    ck.prefix = prefix
  return ck


def detect_naming(tensors) -> str:
  """'official', 'torchvision' or 'timm', from the names of a state dict's tensors."""
  keys = set(tensors)
  if {"cls_token", "pos_embed", "patch_embed.proj.weight"} <= keys:
    return "timm"
  if "fc.weight" in keys and "layer1.0.conv1.weight" in keys:
    return "torchvision"
  if "classifier.weight" in keys or "classifier.1.weight" in keys:
    return "official"
  raise errors.CheckpointError(
      "The checkpoint's tensor names match none of the known namings (the authors' "
      "backbone/ models, torchvision ResNets, timm ViTs); its first names: "
      f"{', '.join(sorted(keys)[:_LIMIT])}."
  )


# ------------------------------------------------------------------------ the mapping ----
# A slot maps one PyTorch module (its name prefix) onto one Flax module (its path):
# (kind, torch prefix, flax path); kinds: conv, conv_bias, bn, dense, dense_nobias,
# dense_chw (AlexNet's first linear layer), ln, raw (a tensor copied as it is).


def _resnet_slots(arch: str, naming: str) -> list[tuple]:
  stages, expansion = _RESNETS[arch]
  block = "BasicBlock" if expansion == 1 else "Bottleneck"
  convs = 2 if expansion == 1 else 3
  short = "downsample" if naming == "torchvision" else "shortcut"
  slots = [("conv", "conv1", "Conv_0"), ("bn", "bn1", "BatchNorm_0")]
  in_planes, b = 64, 0
  for i, n in enumerate(stages):
    planes = 64 * 2**i
    for j in range(n):
      stride = 2 if i > 0 and j == 0 else 1
      t, f = f"layer{i + 1}.{j}", f"{block}_{b}"
      for k in range(convs):
        slots += [("conv", f"{t}.conv{k + 1}", f"{f}/Conv_{k}")]
        slots += [("bn", f"{t}.bn{k + 1}", f"{f}/BatchNorm_{k}")]
      if stride != 1 or in_planes != planes * expansion:
        slots += [("conv", f"{t}.{short}.0", f"{f}/Conv_{convs}")]
        slots += [("bn", f"{t}.{short}.1", f"{f}/BatchNorm_{convs}")]
      in_planes, b = planes * expansion, b + 1
  slots.append(("dense", "fc" if naming == "torchvision" else "classifier", "Dense_0"))
  return slots


def _vgg_slots(arch: str) -> list[tuple]:
  slots, idx, k = [], 0, 0
  for item in vgg_lib.CONFIGS[arch]:
    if item == "M":
      idx += 1
      continue
    slots.append(("conv_bias", f"features.{idx}", f"Conv_{k}"))
    slots.append(("bn", f"features.{idx + 1}", f"BatchNorm_{k}"))
    idx, k = idx + 3, k + 1
  return slots + [("dense", "classifier", "Dense_0")]


def _alexnet_slots() -> list[tuple]:
  slots, idx = [], 0
  for k in range(5):
    slots.append(("conv", f"features.{idx}", f"Conv_{k}"))
    slots.append(("bn", f"features.{idx + 2}", f"BatchNorm_{k}"))
    idx += 4 if k in (0, 1, 4) else 3
  return slots + [
      ("dense_chw", "classifier.1", "Dense_0"),
      ("dense_nobias", "classifier.4", "Dense_1"),
      ("dense_nobias", "classifier.6", "Dense_2"),
  ]


def _vit_slots(arch: str) -> list[tuple]:
  slots = [("raw", "cls_token", "cls_token"), ("raw", "pos_embed", "pos_embed")]
  slots.append(("conv_bias_direct", "patch_embed.proj", "patch_embed/proj"))
  for i in range(vit_lib.DEPTH):
    t, f = f"blocks.{i}", f"blocks_{i}"
    slots += [("ln", f"{t}.norm1", f"{f}/norm1"), ("ln", f"{t}.norm2", f"{f}/norm2")]
    for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
      slots.append(("dense_direct", f"{t}.{m}", f"{f}/{m.replace('.', '/')}"))
  return slots + [("ln", "norm", "norm"), ("dense_direct", "head", "head")]


def slots(arch: str, naming: str) -> list[tuple]:
  """The (kind, torch prefix, flax path) mapping of `arch` in `naming`."""
  if arch in _RESNETS and naming in ("official", "torchvision"):
    return _resnet_slots(arch, naming)
  if arch in vgg_lib.CONFIGS and naming == "official":
    return _vgg_slots(arch)
  if arch == "alexnet" and naming == "official":
    return _alexnet_slots()
  if arch in vit_lib.variants() and naming == "timm":
    return _vit_slots(arch)
  raise errors.CheckpointError(
      f"No {naming} naming is known for --arch={arch}: the authors' files map onto "
      "resnet18/34/50/101, vgg11/13/16/19 and alexnet, torchvision's onto the resnets, "
      f"timm's onto {', '.join(sorted(vit_lib.variants()))}."
  )


# Torch tensor suffixes of each kind -> (collection, flax leaf, layout).
_FIELDS = {
    "conv": [("weight", "params", "Conv_0/kernel", "conv")],
    "conv_bias": [
        ("weight", "params", "Conv_0/kernel", "conv"),
        ("bias", "params", "Conv_0/bias", None),
    ],
    "conv_bias_direct": [("weight", "params", "kernel", "conv"), ("bias", "params", "bias", None)],
    "bn": [
        ("weight", "params", "scale", None),
        ("bias", "params", "bias", None),
        ("running_mean", "batch_stats", "mean", None),
        ("running_var", "batch_stats", "var", None),
    ],
    "dense": [
        ("weight", "params", "Dense_0/kernel", "linear"),
        ("bias", "params", "Dense_0/bias", None),
    ],
    "dense_nobias": [("weight", "params", "Dense_0/kernel", "linear")],
    "dense_chw": [("weight", "params", "Dense_0/kernel", "linear_chw")],
    "dense_direct": [("weight", "params", "kernel", "linear"), ("bias", "params", "bias", None)],
    "ln": [("weight", "params", "scale", None), ("bias", "params", "bias", None)],
    "raw": [("", "params", "", None)],
}
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def _entries(arch: str, naming: str):
  """[(torch name, collection, flax path, layout)] of every tensor the mapping uses."""
  out = []
  for kind, t, f in slots(arch, naming):
    for suffix, coll, leaf, layout in _FIELDS[kind]:
      name = f"{t}.{suffix}" if suffix else t
      path = "/".join(p for p in (f, leaf) if p)
      out.append((name, coll, path, layout))
  return out


def _is_alias(name: str, naming: str, arch: str) -> bool:
  """The official ResNet's `features.<i>` keys repeat conv1/bn1/layer1-4's tensors."""
  return naming == "official" and arch in _RESNETS and name.startswith("features.")


def _unused(name: str, naming: str, arch: str) -> bool:
  return name.endswith(_IGNORED_SUFFIXES) or _is_alias(name, naming, arch)


def _mismatch(tensors, arch: str, naming: str) -> tuple[list[str], list[str]]:
  needed = [e[0] for e in _entries(arch, naming)]
  have = set(tensors)
  missing = [n for n in needed if n not in have]
  used = set(needed)
  unexpected = [n for n in tensors if n not in used and not _unused(n, naming, arch)]
  return missing, unexpected


def closest_arch(tensors, naming: str) -> str | None:
  """The registry architecture whose mapping leaves the fewest missing/unexpected names."""
  best, best_cost = None, None
  for arch in models.names():
    try:
      missing, unexpected = _mismatch(tensors, arch, naming)
    except errors.CheckpointError:
      continue
    cost = len(missing) + len(unexpected)
    if best_cost is None or cost < best_cost:
      best, best_cost = arch, cost
  return best


def _listed(names: list[str]) -> str:
  more = f", ... ({len(names)} in all)" if len(names) > _LIMIT else ""
  return ", ".join(names[:_LIMIT]) + more


def check_names(tensors, arch: str, naming: str) -> None:
  """CheckpointError listing missing and unexpected tensor names unless they fit exactly."""
  try:
    missing, unexpected = _mismatch(tensors, arch, naming)
  except errors.CheckpointError as e:  # no mapping of `arch` in this naming at all
    best = closest_arch(tensors, naming)
    hint = f" The file looks like --arch={best}." if best else ""
    raise errors.CheckpointError(f"{e}{hint}") from None
  if not (missing or unexpected):
    return
  best = closest_arch(tensors, naming)
  hint = (
      f" The file looks like --arch={best}."
      if best and best != arch and not any(_mismatch(tensors, best, naming))
      else (f" Closest architecture: --arch={best}." if best and best != arch else "")
  )
  raise errors.CheckpointError(
      f"The checkpoint ({naming} naming) does not fit --arch={arch}: "
      f"{len(missing)} missing parameter(s) [{_listed(missing)}]; {len(unexpected)} unexpected "
      f"[{_listed(unexpected)}].{hint}"
  )


# ---------------------------------------------------------------------- what it holds ----


@dataclasses.dataclass(frozen=True)
class ViTShape:
  """What a timm ViT's weights say about its shape (its head count they do not say)."""

  dim: int  # embedding width
  depth: int  # number of blocks
  patch: int
  mlp_ratio: float

  def __str__(self) -> str:
    return f"width {self.dim}, depth {self.depth}, patch {self.patch}, MLP ratio {self.mlp_ratio:g}"

  def named(self) -> list[str]:
    """The registry ViTs of exactly this shape."""
    return sorted(
        name
        for name, v in vit_lib.variants().items()
        if (v["dim"], v["patch"]) == (self.dim, self.patch)
        and (self.depth, self.mlp_ratio) == (vit_lib.DEPTH, vit_lib.ViT.mlp_ratio)
    )

  def holds(self) -> str:
    """'The file holds a ViT of width 192, ... (vit_tiny_patch16_224)'."""
    named = self.named()
    return f"The file holds a ViT of {self} ({' or '.join(named) or 'no timm ViT size'})"


def vit_shape(tensors) -> ViTShape | None:
  """The width, depth, patch size and MLP ratio of a timm-named ViT state dict (None where
  the tensors that tell them are missing: the name check then lists what is)."""
  try:
    dim = int(tensors["cls_token"].shape[-1])
    patch = int(tensors["patch_embed.proj.weight"].shape[-1])
    hidden = int(tensors["blocks.0.mlp.fc1.weight"].shape[0])
  except (KeyError, IndexError):
    return None
  blocks = {int(m.group(1)) for k in tensors if (m := re.match(r"blocks\.(\d+)\.", k))}
  return ViTShape(dim, max(blocks) + 1, patch, hidden / dim)


def arch_shape(arch: str, width_multiplier: float = 1.0) -> tuple[ViTShape, int]:
  """The shape of the registry ViT `arch` (at `width_multiplier`, rounded as
  `models.create` rounds it) and its head count."""
  v = vit_lib.variants()[arch]
  dim = models.create(arch, num_classes=1, width_multiplier=width_multiplier).dim
  return ViTShape(dim, vit_lib.DEPTH, v["patch"], vit_lib.ViT.mlp_ratio), v["num_heads"]


def vit_disagreement(shape: ViTShape, arch: str) -> str:
  """'--arch=vit_base_patch16_224 is width 768. Use --arch=vit_tiny_patch16_224.': what of
  `arch`'s shape differs from `shape`'s, and the registry ViT of that shape, if any."""
  if arch not in vit_lib.variants():
    said = f"--arch={arch} is not a ViT"
  else:
    want, _ = arch_shape(arch)
    fields = (("width", "dim"), ("depth", "depth"), ("patch", "patch"), ("MLP ratio", "mlp_ratio"))
    diffs = [
        f"{k} {getattr(want, a):g}" for k, a in fields if getattr(want, a) != getattr(shape, a)
    ]
    said = f"--arch={arch} is {', '.join(diffs) or 'that shape'}"
  named = shape.named()
  if named:
    return f"{said}. Use --arch={named[0]}."
  if (shape.depth, shape.mlp_ratio) != (vit_lib.DEPTH, vit_lib.ViT.mlp_ratio):
    return (
        f"{said}; freqjax's ViTs have depth {vit_lib.DEPTH} and MLP ratio "
        f"{vit_lib.ViT.mlp_ratio:g}, so none reproduces it."
    )
  return f"{said}."


@dataclasses.dataclass
class Spec:
  """The model a state dict holds: what `models.create` needs, and the size it implies."""

  arch: str
  naming: str
  num_classes: int
  width_multiplier: float  # the file's width over the named architecture's
  stem: str
  trained_image_size: int | None  # ViTs: from the position embeddings
  vit: ViTShape | None = None  # ViTs: what the weights say of the shape


def spec(tensors, arch: str, naming: str | None = None) -> Spec:
  """Infers the class count, width and stem of `arch` from the tensors (names checked).

  A ViT's depth, patch size and MLP ratio must be `arch`'s (an error names both shapes and
  the `--arch` that fits); its width may differ (`width_multiplier`, as freqjax trains
  narrow ViTs), but its head count is not in the weights: `importer` accepts another width
  only where the config says so."""
  naming = naming or detect_naming(tensors)
  shape = vit_shape(tensors) if naming == "timm" else None
  if shape is not None:
    want = arch_shape(arch)[0] if arch in vit_lib.variants() else None
    if want is None or dataclasses.replace(shape, dim=want.dim) != want:  # all but the width
      raise errors.CheckpointError(f"{shape.holds()}; {vit_disagreement(shape, arch)}")
  check_names(tensors, arch, naming)
  entries = _entries(arch, naming)
  head = entries[-2][0] if entries[-1][0].endswith("bias") else entries[-1][0]
  num_classes = int(tensors[head].shape[0])
  size = None
  if arch not in vit_lib.variants():
    base = 96 if arch == "alexnet" else 64
    width = float(tensors[entries[0][0]].shape[0]) / base
  else:
    width = shape.dim / vit_lib.variants()[arch]["dim"]
    tokens = int(tensors["pos_embed"].shape[1]) - 1
    grid = int(round(tokens**0.5))
    size = grid * shape.patch if grid * grid == tokens else None
  stem = "imagenet" if naming == "torchvision" else "cifar"
  return Spec(arch, naming, num_classes, width, stem, size, shape)


# ----------------------------------------------------------------------- conversion ----


def _to_flax(a: np.ndarray, layout, channels: int) -> np.ndarray:
  if layout == "conv":
    return a.transpose(2, 3, 1, 0)
  if layout == "linear":
    return a.T
  if layout == "linear_chw":  # (O, C·H·W) -> (H·W·C, O)
    out, n = a.shape
    side = int(round((n // channels) ** 0.5))
    return a.reshape(out, channels, side, side).transpose(2, 3, 1, 0).reshape(n, out)
  return a


def _from_flax(a: np.ndarray, layout, channels: int) -> np.ndarray:
  if layout == "conv":
    return a.transpose(3, 2, 0, 1)
  if layout == "linear":
    return a.T
  if layout == "linear_chw":  # (H·W·C, O) -> (O, C·H·W)
    n, out = a.shape
    side = int(round((n // channels) ** 0.5))
    return a.reshape(side, side, channels, out).transpose(3, 2, 0, 1).reshape(out, n)
  return a


def _get(tree, path: str):
  for p in path.split("/"):
    tree = tree[p]
  return tree


def _set(tree: dict, path: str, value) -> None:
  *parents, leaf = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def _grid_size(tokens: int, patch: int) -> str:
  grid = int(round((tokens - 1) ** 0.5))
  return f"{grid * patch} px" if grid * grid == tokens - 1 else f"{tokens - 1} patches"


def resize_pos_embed(pos: np.ndarray, tokens: int) -> np.ndarray:
  """(1, 1 + g², D) position embeddings resampled (bicubic) to (1, tokens, D), class token
  kept; as timm's `resample_abs_pos_embed`."""
  cls, grid = pos[:, :1], pos[:, 1:]
  old, new = int(round(grid.shape[1] ** 0.5)), int(round((tokens - 1) ** 0.5))
  g = jnp.asarray(grid.reshape(old, old, -1))
  g = jax.image.resize(g, (new, new, g.shape[-1]), "bicubic", antialias=True)
  return np.concatenate([cls, np.asarray(g).reshape(1, new * new, -1)], axis=1)


def to_variables(
    tensors,
    model,
    arch: str,
    naming: str,
    image_size: int,
    *,
    interpolate_pos_embed: bool = False,
) -> dict:
  """Flax variables {'params', 'batch_stats'} of `model` (built for `arch`) from a PyTorch
  state dict; every shape is checked against the model at `image_size`."""
  check_names(tensors, arch, naming)
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  out: dict = {"params": {}, "batch_stats": {}} if "batch_stats" in expected else {"params": {}}
  channels = 0
  for name, coll, path, layout in _entries(arch, naming):
    a = np.asarray(tensors[name], np.float32)
    want = tuple(_get(expected[coll], path).shape)
    if layout == "conv":
      channels = a.shape[0]
    if name == "pos_embed" and a.shape != want:
      patch = vit_lib.variants()[arch]["patch"]
      sizes = f"{_grid_size(a.shape[1], patch)} (checkpoint) vs {image_size} px (requested)"
      if not interpolate_pos_embed or a.shape[2] != want[2]:
        raise errors.CheckpointError(
            f"The ViT's position embeddings were trained at another input size: {sizes}. "
            "Use the checkpoint's size (--image_size), or let freqjax resample them with "
            "--config.model.interpolate_pos_embed=True beside a --config (accuracy may drop)."
        )
      warnings.warn(f"Resampling the ViT's position embeddings: {sizes}.", stacklevel=2)
      a = resize_pos_embed(a, want[1])
    value = _to_flax(a, layout, channels)
    if value.shape != want:
      shown = tuple(_from_flax(np.zeros(want, np.float32), layout, channels).shape)
      raise errors.CheckpointError(
          f"Layer {name} has shape {tuple(a.shape)} in the checkpoint, but the model "
          f"--arch={arch} at {image_size} px needs {shown} there (Flax {path}: {want})."
      )
    _set(out[coll], path, jnp.asarray(value))
  return out


def to_state_dict(variables, arch: str, naming: str) -> dict[str, np.ndarray]:
  """The inverse: a PyTorch state dict (names, layouts) of freqjax variables of `arch`."""
  out, channels = {}, 0
  for name, coll, path, layout in _entries(arch, naming):
    a = np.asarray(_get(variables[coll], path), np.float32)
    if layout == "conv":
      channels = a.shape[-1]
    out[name] = np.ascontiguousarray(_from_flax(a, layout, channels))
  return out
