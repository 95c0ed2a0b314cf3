"""A model trained elsewhere, written as a freqjax workdir: `import_model`.

    import_model("resnet18.ckpt", "resnet18", "runs/imported", config=data_config)

reads the file without running any of its code (`convert.read`), detects its naming, infers
the class count, width and stem, converts the weights and writes a workdir that the analysis
launchers use as they use a trained one (pass `--config=configs/imported.py:<workdir>`):

    run.json            the run's identity (model, classes, image size, seed)
    config.json         `config` with the model fields set from the file (the data and
                        analysis sections are the caller's)
    checkpoints/0/      an Orbax checkpoint of the converted weights (the optimiser state is
                        fresh, so training could also resume from it)
    train_results.json  `done: true` and `imported: {...}` (where from, its sha256, naming):
                        the pipeline skips training

A workdir that holds any run is refused (`Workdir.claim_empty`; `move_aside` renames it);
importing the same file with the same settings again writes nothing. With `check=IO.npz`
(`x_nchw`, normalised NCHW float32, and the `logits` PyTorch computed), the converted model
is run on `x_nchw` before anything is written: a maximum relative logit error above
`check_tolerance` is an error and leaves the workdir as it was.

A ViT's weights give its width, depth, patch size, MLP ratio and class count, not its head
count, which is the `--arch`'s: a file whose shape is not the named ViT's is refused (naming
both and the `--arch` that fits) unless the config names this architecture at a
`width_multiplier` that gives the file's width (a ViT trained by freqjax at that width).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from freqjax import artifacts, config as config_lib, errors, models, workdir as workdir_lib
from freqjax.interop import convert
from freqjax.training import checkpoint, state as state_lib


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(2**20), b""):
      h.update(block)
  return h.hexdigest()


def _read_io(path: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as z:
      x, logits = np.asarray(z["x_nchw"], np.float32), np.asarray(z["logits"], np.float32)
  except (OSError, ValueError, KeyError) as e:
    raise errors.CheckpointError(
        f"--check={path} is not an .npz with arrays x_nchw (N, 3, H, W) and logits (N, C) "
        f"({type(e).__name__}: {e})."
    ) from e
  if x.ndim != 4 or x.shape[1] != 3 or logits.shape[:1] != x.shape[:1]:
    raise errors.CheckpointError(
        f"--check={path}: x_nchw {x.shape} and logits {logits.shape} are not (N, 3, H, W) and "
        "(N, C) for the same N."
    )
  return x, logits


def max_rel_logit_error(logits: np.ndarray, reference: np.ndarray) -> float:
  """max |logits − reference| over the batch, relative to the largest |reference| logit."""
  scale = float(np.max(np.abs(reference)))
  return float(np.max(np.abs(logits - reference))) / (scale if scale > 0 else 1.0)


def _image_size(requested, ck: convert.Checkpoint, spec: convert.Spec, io, config) -> int:
  """The size to import at: asked for, else the file's (Lightning's hyper_parameters, a
  ViT's position embeddings), else the check batch's, else the config's."""
  if requested:
    return int(requested)
  for size in (ck.hyper_parameters.get("image_size"), spec.trained_image_size):
    if isinstance(size, int) and size > 0:
      return size
  if io is not None:
    return int(io[0].shape[2])
  if config is not None:
    return int(config.data.image_size)
  raise errors.ConfigError(
      f"{ck.path} does not say which image size the model was trained at; give --image_size."
  )


def _vit_width(spec: convert.Spec, config) -> convert.Spec:
  """`spec` with the width multiplier to build a ViT at: 1 where the file's width is the named
  architecture's; else the one `config` asks for (its model being `spec.arch`), where it
  gives the file's width with the architecture's head count; else a CheckpointError naming
  both shapes (the weights do not hold the head count, so a ViT is never rescaled silently)."""
  if spec.vit is None:
    return spec
  named, heads = convert.arch_shape(spec.arch)
  if spec.vit.dim == named.dim:
    return dataclasses.replace(spec, width_multiplier=1.0)
  asked = None
  if config is not None and config.model.name == spec.arch:
    asked = float(config.model.width_multiplier)
    if convert.arch_shape(spec.arch, asked)[0].dim == spec.vit.dim:
      return dataclasses.replace(spec, width_multiplier=asked)
  msg = f"{spec.vit.holds()}; {convert.vit_disagreement(spec.vit, spec.arch)}"
  if not spec.vit.named():
    ratio = spec.vit.dim / named.dim
    given = f" (the config's width_multiplier {asked:g} does not give it)" if asked else ""
    msg += (
        f" A ViT's weights do not hold its head count, so {spec.arch} ({heads} heads) is not "
        f"rescaled to width {spec.vit.dim} unless asked{given}: "
        + (
            f"for one trained with width_multiplier {ratio:g}, pass the --config it was "
            f"trained with (--config.model.name={spec.arch} "
            f"--config.model.width_multiplier={ratio:g})."
            if spec.vit.dim % heads == 0
            else f"no width multiplier gives {heads} heads of width {spec.vit.dim}."
        )
    )
  raise errors.CheckpointError(msg)


def build_config(base, spec: convert.Spec, image_size: int, *, mean, std, class_names):
  """`base` (or base_config()) with the model fields of the imported model; its classes
  (or `class_names`) kept, mapped to the model's outputs when they are fewer."""
  c = copy.deepcopy(base) if base is not None else config_lib.base_config()
  c.unlock()
  c.model.name = spec.arch
  c.model.width_multiplier = float(spec.width_multiplier)
  c.model.stem = spec.stem
  c.model.dtype = "float32"
  c.data.image_size = int(image_size)
  if class_names:
    names = tuple(class_names)
  elif base is not None:
    names = tuple(c.data.class_names)
  else:
    names = tuple(str(i) for i in range(spec.num_classes))
  if len(names) > spec.num_classes:
    raise errors.ConfigError(
        f"{len(names)} classes for a model with {spec.num_classes} outputs; give at most one "
        "class per output (--class_names or the --config's data section)."
    )
  if class_names and c.data.class_folders and len(c.data.class_folders) != len(names):
    c.data.class_folders = ()
  # Fewer classes than outputs (e.g. ten ImageNet classes of a 1000-output model): the
  # classes and their folders stay, and config.data.model_classes says which output each
  # class is (given, or filled in by synset by `validate`: freqjax/classmap.py).
  c.model.num_outputs = 0 if len(names) == spec.num_classes else spec.num_classes
  c.data.num_classes, c.data.class_names = len(names), names
  for key, value in (("mean", mean), ("std", std)):
    if value:
      if len(value) != 3:
        raise errors.ConfigError(f"--{key} needs three numbers (R, G, B), got {list(value)}.")
      c.data[key] = tuple(float(v) for v in value)
  config_lib.validate(c)
  return c


def import_model(
    source: str,
    arch: str,
    workdir: str,
    *,
    config=None,
    image_size: int | None = None,
    mean=None,
    std=None,
    class_names=None,
    check: str | None = None,
    check_tolerance: float = 1e-4,
    move_aside: bool = False,
) -> dict:
  """Imports `source` as `arch` (a registry name) into `workdir`; returns what was done
  (and `max_rel_logit_error` with `check`: above `check_tolerance` nothing is written)."""
  if arch not in models.names():
    raise errors.ConfigError(f"Unknown --arch={arch!r}; known: {', '.join(models.names())}.")
  if not (math.isfinite(check_tolerance) and check_tolerance >= 0):
    raise errors.ConfigError(
        f"--check_tolerance={check_tolerance} is not a non-negative number (the largest max "
        "relative logit error accepted, e.g. 1e-4)."
    )
  ck = convert.read(source)
  naming = convert.detect_naming(ck.tensors)
  spec = _vit_width(convert.spec(ck.tensors, arch, naming), config)
  io = _read_io(check) if check else None
  size = _image_size(image_size, ck, spec, io, config)
  c = build_config(config, spec, size, mean=mean, std=std, class_names=class_names)
  model = models.from_config(c.model, spec.num_classes)
  variables = convert.to_variables(
      ck.tensors, model, arch, naming, size, interpolate_pos_embed=c.model.interpolate_pos_embed
  )
  result = {
      "workdir": os.path.abspath(workdir),
      "source": os.path.abspath(source),
      "format": ck.format,
      "naming": naming,
      "arch": arch,
      "num_classes": spec.num_classes,
      **(
          {"classes": len(c.data.class_names), "model_classes": list(c.data.model_classes)}
          if c.model.num_outputs
          else {}
      ),
      "width_multiplier": spec.width_multiplier,
      "stem": spec.stem,
      "image_size": size,
      "num_params": models.count_params(variables["params"]),
  }
  if spec.vit is not None:
    result["vit"] = dataclasses.asdict(spec.vit) | {"num_heads": model.num_heads}
  sha = _sha256(source)
  imported = {k: result[k] for k in ("source", "format", "naming", "arch")} | {"sha256": sha}
  wd = workdir_lib.Workdir(workdir)
  if io is not None:  # before anything is written: a model not reproduced leaves no run
    result.update(_check(model, variables, io, size, check), check_tolerance=check_tolerance)
    if not result["max_rel_logit_error"] <= check_tolerance:  # NaN fails too
      raise errors.CheckpointError(_not_reproduced(result, wd, sha))
  with wd.lock():
    ident = workdir_lib.identity(c, None)
    prev = (wd.train_results() or {}).get("imported") or {}
    recorded = wd.recorded_identity()
    same = prev.get("sha256") == sha and recorded is not None
    if same and not workdir_lib.identity_diff(recorded, ident):
      result["written"] = False
      logging.info("%s already holds this import of %s; nothing written.", wd.root, source)
    else:
      wd.claim_empty(ident, move_aside=move_aside, what=f"the model from {source}")
      _write(wd, c, variables, imported)
      result["written"] = True
  return result


def _not_reproduced(result: dict, wd: workdir_lib.Workdir, sha: str) -> str:
  earlier = ((wd.train_results() or {}).get("imported") or {}).get("sha256") == sha
  return (
      f"--check={result['check']}: the imported {result['arch']} gives logits with a max "
      f"relative error of {result['max_rel_logit_error']:.3g} (max absolute "
      f"{result['max_abs_logit_error']:.3g}) against PyTorch's, above "
      f"--check_tolerance={result['check_tolerance']:g}: the model was not reproduced, so "
      f"nothing was written to {wd.root}."
      + (
          " (It holds an earlier import of the same file, not written by this launch and left "
          "as it was.)"
          if earlier
          else ""
      )
  )


def _write(wd: workdir_lib.Workdir, c, variables, imported: dict) -> None:
  tx = state_lib.make_optimizer(c.train)
  params = variables["params"]
  state = state_lib.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
  )
  artifacts.write_json(wd.config, c)
  plateau = state_lib.Plateau(
      lr=c.train.lr,
      factor=c.train.plateau_factor,
      patience=c.train.plateau_patience,
      threshold=c.train.plateau_threshold,
  )
  host = {"epoch": 0, "batch": 0, "done": True, "plateau": plateau.to_dict(), "imported": imported}
  ckpts = checkpoint.Checkpoints(wd.checkpoints, c.train.keep_checkpoints)
  try:
    ckpts.save(0, state, host, None)
  finally:
    ckpts.close()
  artifacts.write_json(
      wd.train_results_file,
      {
          "done": True,
          "imported": imported,
          "model": c.model.name,
          "class_names": list(c.data.class_names),
          "steps": 0,
          "epochs_completed": 0,
          "test_accuracy": None,
          "test_per_class_accuracy": None,
      },
  )


def _check(model, variables, io, size: int, path: str) -> dict:
  x, reference = io
  if x.shape[2:] != (size, size):
    raise errors.CheckpointError(
        f"--check={path} holds {x.shape[2]}×{x.shape[3]} images, the model is imported at "
        f"{size}×{size}; give --image_size={x.shape[2]} or a check batch of that size."
    )
  apply = jax.jit(lambda v, xs: model.apply(v, xs, train=False))
  logits = np.asarray(apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1))), np.float32)
  if logits.shape != reference.shape:
    raise errors.CheckpointError(
        f"--check={path}: the model gives logits {logits.shape}, the file holds "
        f"{reference.shape}."
    )
  return {
      "check": os.path.abspath(path),
      "check_images": int(x.shape[0]),
      "max_abs_logit_error": float(np.max(np.abs(logits - reference))),
      "max_rel_logit_error": max_rel_logit_error(logits, reference),
  }


def describe(result: dict) -> str:
  """The lines the launcher prints (before its JSON line)."""
  vit = result.get("vit")
  lines = [
      f"Imported {result['source']} ({result['format']}, {result['naming']} naming) as "
      f"{result['arch']}: {result['num_classes']} classes, width ×{result['width_multiplier']:g}, "
      f"{result['stem']} stem, {result['image_size']} px, {result['num_params']:,} parameters"
      + (
          f" (a ViT of width {vit['dim']}, depth {vit['depth']}, patch {vit['patch']}; "
          f"{vit['num_heads']} heads, from the --arch)."
          if vit
          else "."
      ),
      (
          f"Wrote {result['workdir']} (config.json, checkpoints/0, run.json)."
          if result["written"]
          else f"{result['workdir']} already holds this import; nothing was written."
      ),
      f"Analyse it with --config=configs/imported.py:{result['workdir']} "
      f"--workdir={result['workdir']}.",
  ]
  if "model_classes" in result:
    lines.insert(
        1,
        f"The config's {result['classes']} classes are outputs "
        f"{', '.join(map(str, result['model_classes']))} of its {result['num_classes']} "
        "(config.data.model_classes).",
    )
  if "max_rel_logit_error" in result:
    lines.append(
        f"Check on {result['check_images']} images of {result['check']}: max relative logit "
        f"error {result['max_rel_logit_error']:.3g} "
        f"(max absolute {result['max_abs_logit_error']:.3g}; tolerance "
        f"{result['check_tolerance']:g})."
    )
  return "\n".join(lines)
