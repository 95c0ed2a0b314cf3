"""Train state, the official optimiser, and ReduceLROnPlateau.

Optimiser: torch.optim.SGD(lr, momentum=0.9, nesterov=True, weight_decay=1e-4), i.e. the L2
term `wd·p` is added to the gradient before the momentum trace (optax.add_decayed_weights
before optax.sgd), for every parameter including BN scales and biases, as PyTorch does. The
learning rate is an injected hyper-parameter so the plateau scheduler can change it without
recompiling.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self):
    return {"params": self.params, "batch_stats": self.batch_stats}


def make_optimizer(train_config) -> optax.GradientTransformation:
  t = train_config

  def sgd(learning_rate):
    return optax.chain(
        optax.add_decayed_weights(t.weight_decay),
        optax.sgd(learning_rate, momentum=t.momentum, nesterov=t.nesterov),
    )

  return optax.inject_hyperparams(sgd)(learning_rate=t.lr)


def create(model, tx, rng, image_size: int) -> TrainState:
  """Fresh state; params initialised like PyTorch's defaults (see models.layers)."""
  variables = model.init(rng, jnp.zeros((1, image_size, image_size, 3)), train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
  )


def with_learning_rate(state: TrainState, lr: float) -> TrainState:
  hp = dict(state.opt_state.hyperparams)
  hp["learning_rate"] = jnp.asarray(lr, hp["learning_rate"].dtype)
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hp))


@dataclasses.dataclass
class Plateau:
  """torch.optim.lr_scheduler.ReduceLROnPlateau(mode='min', threshold_mode='rel')."""

  lr: float
  factor: float = 0.1
  patience: int = 10
  threshold: float = 1e-4
  min_lr: float = 0.0
  eps: float = 1e-8
  best: float = math.inf
  num_bad: int = 0

  def step(self, metric: float) -> float:
    if metric < self.best * (1.0 - self.threshold):
      self.best, self.num_bad = metric, 0
    else:
      self.num_bad += 1
    if self.num_bad > self.patience:
      new = max(self.lr * self.factor, self.min_lr)
      if self.lr - new > self.eps:
        self.lr = new
      self.num_bad = 0
    return self.lr

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["best"] = None if math.isinf(d["best"]) else d["best"]
    return d

  @classmethod
  def from_dict(cls, d: dict) -> Plateau:
    d = dict(d)
    d["best"] = math.inf if d["best"] is None else d["best"]
    return cls(**d)
