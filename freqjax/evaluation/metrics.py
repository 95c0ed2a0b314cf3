"""Confusion-matrix metrics. Confusion matrices have rows = true class, columns = predicted
class (as torchmetrics' ConfusionMatrix in the official code)."""

from __future__ import annotations

import numpy as np


def confusion(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, other: bool = False
) -> np.ndarray:
  """(C, C) counts; with `other`, (C, C + 1): a last column 'other' counts the predictions
  outside the classes (>= num_classes: a model's outputs beyond the dataset's classes)."""
  out = np.zeros((num_classes, num_classes + int(other)), np.int64)
  predictions = np.asarray(predictions)
  if other:
    predictions = np.minimum(predictions, num_classes)
  np.add.at(out, (np.asarray(labels), predictions), 1)
  return out


def accuracy(conf: np.ndarray) -> float:
  total = conf.sum()
  return float(np.trace(conf) / total) if total else float("nan")


def tpr_fpr(
    conf: np.ndarray, positives: np.ndarray | None = None, negatives: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Per class k: TPR_k = (k predicted k) / P_k and FPR_k = (non-k predicted k) / N_k.

  P_k and N_k default to the counts in `conf`; the official shortcut test divides by the
  counts of the unfiltered test set, which are the same images. A last 'other' column
  (`confusion(..., other=True)`) counts as a miss and predicts no class.
  """
  conf = np.asarray(conf, np.float64)
  tp = np.diag(conf)
  pos = conf.sum(axis=1) if positives is None else positives
  neg = conf.sum() - pos if negatives is None else negatives
  with np.errstate(divide="ignore", invalid="ignore"):
    return tp / pos, (conf.sum(axis=0)[: conf.shape[0]] - tp) / neg


def per_class_accuracy(conf: np.ndarray) -> np.ndarray:
  conf = np.asarray(conf, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.diag(conf) / conf.sum(axis=1)
