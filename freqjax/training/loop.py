"""The training program: `train_and_evaluate(config, workdir)`.

Data parallel with `jax.jit` over one 'data' mesh: the global batch is sharded over every
device (of every process), parameters and optimiser state are replicated, the gradient
all-reduce and BatchNorm's batch statistics span the global batch. (The official multi-GPU
runs used PyTorch Lightning's DataParallel-style defaults, where BatchNorm statistics are
computed per GPU; here they are global, so results do not depend on the device count.)

Per epoch: train, evaluate the validation split (a seeded 10 % of the train split), step
ReduceLROnPlateau on the validation loss, save a checkpoint. At the end: test. A rerun with
the same workdir resumes from the latest good checkpoint and ends with the same parameters
as an uninterrupted run: data order depends only on (seed, epoch), randomness only on
(seed, step), and checkpoints carry the position inside the epoch.

Workdir (`freqjax.workdir.Workdir`): run.json, config.json, checkpoints/, metrics.jsonl,
tensorboard/, train_results.json. A launch first takes the workdir's lock and checks that
the workdir holds no other run (`Workdir.claim`), before it writes anything. Training stops
at the first non-finite loss (checked every `log_every_steps` steps and at every epoch end,
before a checkpoint is written), so no non-finite checkpoint exists.
"""

from __future__ import annotations

import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from freqjax import (
    artifacts,
    classmap,
    config as config_lib,
    errors,
    models,
    parallel,
    workdir as workdir_lib,
)
from freqjax.data import augment, loader as loader_lib
from freqjax.evaluation import dynamics, inference, metrics
from freqjax.training import checkpoint, logs, state as state_lib


def make_train_step(model, config, mesh, tx):
  transform = augment.make_train_transform(config)

  def step(state, batch, rng):
    key = jax.random.fold_in(rng, state.step)
    k_aug, k_drop = jax.random.split(key)
    labels = batch["label"]
    x = transform(k_aug, batch["image"], labels)

    def loss_fn(params):
      logits, updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats},
          x,
          train=True,
          mutable=["batch_stats"],
          rngs={"dropout": k_drop},
      )
      logits = logits.astype(jnp.float32)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    upd, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, upd),
        batch_stats=updates["batch_stats"],
        opt_state=opt_state,
    )
    acc = jnp.mean(jnp.argmax(logits, -1) == labels)
    return new, {"loss": loss, "accuracy": acc}

  repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  return jax.jit(
      step, in_shardings=(repl, data, repl), out_shardings=(repl, repl), donate_argnums=(0,)
  )


def _loaders(config, ds, mesh):
  from freqjax.data import datasets  # pylint: disable=g-import-not-at-top

  t = config.train
  train_src, test_src = ds.source("train"), ds.source("test")
  train_idx, val_idx = datasets.train_val_indices(
      len(train_src), config.data.val_fraction, config.seed
  )
  rows = parallel.process_slice(t.batch_size, mesh)
  erows = parallel.process_slice(t.eval_batch_size, mesh)
  train = loader_lib.Loader(
      train_src,
      train_idx,
      t.batch_size,
      shuffle=True,
      seed=config.seed,
      drop_remainder=True,
      rows=rows,
      prefetch=t.prefetch,
  )
  mk = lambda src, idx: loader_lib.Loader(
      src,
      idx,
      t.eval_batch_size,
      shuffle=False,
      drop_remainder=False,
      rows=erows,
      prefetch=t.prefetch,
  )
  return train, mk(train_src, val_idx), mk(test_src, np.arange(len(test_src)))


def setup(config):
  """Validated config, mesh, prepared dataset and model (shared by training and analysis)."""
  # tensorflow-datasets is imported here, not at module level, so that the training step can
  # be benchmarked on machines without it (launch/gpu_bench.sh).
  from freqjax.data import datasets  # pylint: disable=g-import-not-at-top

  config_lib.validate(config)
  mesh = parallel.make_mesh(config.train.num_devices)
  parallel.check_batch_size(config.train.batch_size, mesh)
  parallel.check_batch_size(config.train.eval_batch_size, mesh, "config.train.eval_batch_size")
  ds = datasets.prepare(config.data)
  if ds.num_classes != config.data.num_classes:
    raise errors.ConfigError(
        f"The dataset has {ds.num_classes} classes but config.data.num_classes "
        f"is {config.data.num_classes}; make them agree."
    )
  model = models.from_config(config.model, classmap.outputs(config))
  return mesh, ds, model


def init_state(config, model, mesh, tx):
  init_rng = jax.random.fold_in(jax.random.key(config.seed), 0)
  create = functools.partial(state_lib.create, model, tx, image_size=config.data.image_size)
  return jax.jit(create, out_shardings=parallel.replicated(mesh))(init_rng)


def train_and_evaluate(config, workdir: str, *, move_aside: bool = False) -> dict:
  """Trains (or resumes) the model of `config` in `workdir`; returns the final results.

  Refuses (WorkdirError, nothing written) a workdir that holds a run of another model,
  class set, dataset, seed or image size, unless `move_aside` (the old run is renamed, not
  deleted). Raises TrainingDivergedError at the first non-finite loss.
  """
  wd = workdir_lib.Workdir(workdir)
  with wd.lock():
    return _train(config, wd, move_aside)


def _train(config, wd: workdir_lib.Workdir, move_aside: bool) -> dict:
  classmap.check_trainable(config)  # one output per class: a mapped model is imported
  mesh, ds, model = setup(config)
  t = config.train
  main = parallel.is_main_process()
  wd.claim(workdir_lib.identity(config, ds.path), move_aside=move_aside)
  if main:
    artifacts.write_json(wd.config, config)

  train_loader, val_loader, test_loader = _loaders(config, ds, mesh)
  tx = state_lib.make_optimizer(t)
  state = init_state(config, model, mesh, tx)
  train_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  ckpts = checkpoint.Checkpoints(wd.checkpoints, t.keep_checkpoints)
  restored = ckpts.restore_latest(checkpoint.abstract(state, parallel.replicated(mesh)))
  host = {
      "epoch": 0,
      "batch": 0,
      "done": False,
      "plateau": state_lib.Plateau(
          lr=t.lr,
          factor=t.plateau_factor,
          patience=t.plateau_patience,
          threshold=t.plateau_threshold,
      ).to_dict(),
  }
  if restored is not None:
    state, host, ck_step = restored
    logging.info(
        "Resumed from checkpoint %d (epoch %d, batch %d) in %s",
        ck_step,
        host["epoch"],
        host["batch"],
        ckpts.directory,
    )
  plateau = state_lib.Plateau.from_dict(host["plateau"])
  step = int(state.step)
  writer = logs.MetricWriter(wd.root, resume_step=step if restored is not None else None)
  guard = FiniteGuard(config, ckpts)

  steps_per_epoch = len(train_loader)
  total = t.epochs * steps_per_epoch
  if t.max_steps > 0:
    total = min(total, t.max_steps)
  evaluators = []
  if config.dynamics.every_steps > 0:
    evaluators.append(dynamics.BandViewEvaluator(config, model, mesh, test_loader, ds.class_names))
  train_step = make_train_step(model, config, mesh, tx)
  eval_step = inference.make_eval_step(model, config, mesh)
  if step == 0:
    for ev in evaluators:
      if ev.due(0):
        ev(state.variables, 0, writer)

  bar = parallel.progress(
      total=total * t.batch_size,
      initial=step * t.batch_size,
      unit="img",
      unit_scale=True,
      disable=not t.progress,
      desc="train",
  )
  epoch, t0, step0 = host["epoch"], time.time(), step
  while step < total and epoch < t.epochs:
    start = host["batch"] if epoch == host["epoch"] else 0
    b_in_epoch, pending = start, []
    for batch in train_loader.epoch(epoch, start):
      if step >= total:
        break
      state, m = train_step(state, parallel.shard_batch(mesh, batch), train_rng)
      step += 1
      b_in_epoch += 1
      pending.append(m)
      bar.update(t.batch_size)
      if step % t.log_every_steps == 0:
        fetched = jax.device_get(pending)
        guard.check(fetched, step - len(fetched) + 1, epoch)
        means = {k: float(np.mean([p[k] for p in fetched])) for k in fetched[0]}
        means["lr"] = plateau.lr
        writer.write(step, "train", means)
        bar.set_postfix(
            epoch=epoch, loss=f"{means['loss']:.4f}", lr=f"{plateau.lr:g}", refresh=False
        )
        pending = []
      for ev in evaluators:
        if ev.due(step):
          ev(state.variables, step, writer)
    pending = jax.device_get(pending)  # host values from here on: fetched once, not again
    guard.check(pending, step - len(pending) + 1, epoch)
    val = inference.evaluate(eval_step, state.variables, val_loader, mesh)
    guard.check([{"loss": val["loss"]}], step, epoch, what="validation loss")
    complete = b_in_epoch == steps_per_epoch
    if complete:
      lr = plateau.step(val["loss"])
      state = state_lib.with_learning_rate(state, lr)
      epoch += 1
      host = dict(host, epoch=epoch, batch=0)
    else:
      host = dict(host, epoch=epoch, batch=b_in_epoch)
    host["plateau"] = plateau.to_dict()
    host["done"] = step >= total or epoch >= t.epochs
    writer.write(
        step,
        "val",
        {"loss": val["loss"], "accuracy": val["accuracy"], "epoch": epoch, "lr": plateau.lr},
    )
    ckpts.save(step, state, host, val["loss"])
    logging.info(
        "epoch %d step %d: val loss %.4f acc %.4f lr %g",
        epoch,
        step,
        val["loss"],
        val["accuracy"],
        plateau.lr,
    )
    if not complete:
      break
  bar.close()
  elapsed = time.time() - t0

  test = inference.evaluate(eval_step, state.variables, test_loader, mesh)
  tpr, fpr = metrics.tpr_fpr(test["confusion"])
  results = {
      "test_accuracy": test["accuracy"],
      "test_loss": test["loss"],
      "test_per_class_accuracy": metrics.per_class_accuracy(test["confusion"]).tolist(),
      "test_tpr": tpr.tolist(),
      "test_fpr": fpr.tolist(),
      "test_confusion": test["confusion"].tolist(),
      "class_names": ds.class_names,
      "steps": step,
      "epochs_completed": host["epoch"],
      "best_checkpoint": ckpts.best_step(),
      "train_seconds_this_run": elapsed,
      "train_images_per_second_this_run": (step - step0) * t.batch_size / max(elapsed, 1e-9),
      "dataset": ds.path,
      "model": config.model.name,
      "devices": int(mesh.devices.size),
      "processes": jax.process_count(),
      "done": bool(host["done"]),
  }
  writer.write(step, "test", {"loss": test["loss"], "accuracy": test["accuracy"]})
  writer.close()
  ckpts.close()
  if main:
    artifacts.write_json(wd.train_results_file, results)
  logging.info("test accuracy %.4f after %d steps", test["accuracy"], step)
  return results


def restore_model(config, workdir: str, which="best"):
  """(model, variables, info) of a trained workdir, checked against the config's model.

  `which`: 'best', 'latest' or a step. A checkpoint of another model or class count fails
  with a message that names both.
  """
  mesh, ds, model = setup(config)
  tx = state_lib.make_optimizer(config.train)
  state = jax.eval_shape(
      functools.partial(state_lib.create, model, tx, image_size=config.data.image_size),
      jax.random.key(0),
  )
  wd = workdir_lib.Workdir(workdir)
  ckpts = checkpoint.Checkpoints(wd.checkpoints, config.train.keep_checkpoints)
  abstract = checkpoint.abstract(state, parallel.replicated(mesh))
  try:
    restored, host, step = ckpts.restore(which, abstract)
  except errors.CheckpointError as e:
    if "another model" not in str(e):
      raise
    raise errors.CheckpointError(
        f"The checkpoint in {wd.root} does not fit the configured model "
        f"{config.model.name} (width {config.model.width_multiplier}, "
        f"{classmap.outputs(config)} outputs): it was trained as {_trained_as(wd)}. Use the "
        f"config the run was trained with (--config=configs/imported.py:{wd.root}). "
        f"({str(e)[:300]})"
    ) from e
  finally:
    ckpts.close()
  info = {
      "workdir": workdir,
      "checkpoint_step": int(step),
      "which": str(which),
      "val_loss": host.get("val_loss"),
  }
  return model, restored.variables, info, mesh, ds


def _trained_as(wd: workdir_lib.Workdir) -> str:
  path = wd.config
  try:
    with open(path) as f:
      c = json.load(f)
    return (
        f"{c['model']['name']} (width {c['model']['width_multiplier']}, "
        f"{c['model'].get('num_outputs') or c['data']['num_classes']} outputs) according to "
        f"{path}"
    )
  except Exception:  # pylint: disable=broad-except
    return "another model (no readable config.json in the workdir)"


class FiniteGuard:
  """Stops training at the first non-finite loss, naming the step and the likely cause.

  Checked on losses already fetched to the host (every `log_every_steps` steps and at every
  epoch end), so it costs no extra device-to-host sync per step.
  """

  def __init__(self, config, ckpts):
    self.config, self.ckpts = config, ckpts

  def check(self, fetched: list[dict], first_step: int, epoch: int, what="training loss"):
    for i, m in enumerate(fetched):
      loss = float(m["loss"])
      if not np.isfinite(loss):
        self._fail(loss, first_step + i, epoch, what)

  def _fail(self, loss, step, epoch, what):
    t = self.config.train
    steps = self.ckpts.steps()
    last = (
        f"The last good checkpoint is step {steps[-1]}." if steps else "No checkpoint was written."
    )
    raise errors.TrainingDivergedError(
        f"Training diverged: the {what} is {loss} at step {step} (epoch {epoch}); stopped "
        f"before writing a checkpoint from it. {last} Likely cause: a learning rate too high "
        f"for this model (config.train.lr={t.lr:g}; the paper uses 0.01) — lower it, or check "
        f"the input normalisation (config.data.mean/std) and the data."
    )
