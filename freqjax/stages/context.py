"""What every analysis stage shares: the trained model with its test set (`Context`), and the
cached-stage protocol (`cached`)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from freqjax import artifacts, classmap, errors, parallel, workdir as workdir_lib
from freqjax.data import augment
from freqjax.training import loop


@dataclasses.dataclass
class Context:
  """A trained model and its normalised test set, shared by the analysis stages."""

  config: Any
  wd: workdir_lib.Workdir
  model: Any
  variables: Any
  checkpoint: dict
  mesh: Any
  dataset: Any
  images: np.ndarray  # normalised test images (N, S, S, 3) float32
  labels: np.ndarray
  class_names: list
  # With config.analysis.data='config': the run's identity fields this config's data differs
  # in, {field: [in the run, now]} (recorded in every artifact and in the fingerprints).
  data_differs: dict = dataclasses.field(default_factory=dict)
  # The class map (freqjax/classmap.py): the permutation of the model's outputs that puts
  # class k's output at logit k, the others after the classes'; None: the identity.
  output_order: Any = None

  def apply_fn(self, variables, x):
    """The model's logits over all its outputs, class k's output at index k (the labels are
    dataset classes; a prediction >= num_classes is an output outside the classes)."""
    logits = self.model.apply(variables, x, train=False)
    return logits if self.output_order is None else jnp.take(logits, self.output_order, -1)

  def meta(self, **extra) -> dict:
    c = self.config
    return {
        "model": c.model.to_dict(),
        "checkpoint": self.checkpoint,
        "config": c.to_dict(),
        "dataset": {
            "name": c.data.name,
            "path": self.dataset.path,
            "split": "test",
            "num_images": int(len(self.labels)),
        },
        "classes": self.class_names,
        "image_size": int(c.data.image_size),
        "layout": "centred",
        **(
            {"analysis_data": {"source": "config", "differs_from_run": self.data_differs}}
            if self.data_differs
            else {}
        ),
        **extra,
    }

  def fingerprint(self, *parts, model: bool = True) -> str:
    """A hash of the checkpoint step (unless `model=False`: a stage of the data alone), the
    dataset and `parts` (the stage's settings)."""
    blob = json.dumps(
        [
            self.checkpoint.get("checkpoint_step") if model else "data only",
            self.dataset.path,
            [p.to_dict() if hasattr(p, "to_dict") else p for p in parts],
        ]
        + ([self.data_differs] if self.data_differs else []),
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def normalised(config, images: np.ndarray, batch: int = 512) -> np.ndarray:
  """uint8 test images -> normalised float32 at image_size (the evaluation transform)."""
  fn = jax.jit(augment.make_eval_transform(config))
  return np.concatenate(
      [np.asarray(fn(images[i : i + batch])) for i in range(0, len(images), batch)]
  )


# Identity fields that --config.analysis.data=config may change (the data analysed); a run's
# model fields never: its checkpoint is of that model.
DATA_FIELDS = (
    "dataset",
    "normalisation",
    "class_names",
    "image_size",
    "seed",
    "augment.dfmx",
    "class_map",
)


def check_identity(config, wd: workdir_lib.Workdir, ds, *, model: bool = True) -> dict:
  """Refuses to analyse a run with data other than it was trained on, as training does.

  Compares the run's identity (run.json: dataset content, normalisation, classes, image
  size, seed, model) with this config's. With `config.analysis.data='config'` differing data
  fields are allowed and returned ({field: [in the run, now]}), to be recorded; otherwise
  any difference is a WorkdirError that names each field and the ways out.
  """
  recorded = wd.recorded_identity()
  if recorded is None:
    return {}
  diff = workdir_lib.identity_diff(recorded, workdir_lib.identity(config, ds.path))
  if not diff:
    return {}
  fields = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, a, b in diff)
  data_only = all(k in DATA_FIELDS for k, _, _ in diff)
  if config.analysis.data == "config" and data_only:
    logging.warning("Analysing %s with this config's data on purpose: %s", wd.root, fields)
    return {k: [a, b] for k, a, b in diff}
  what = "its model" if model else "it"
  way_out = (
      " or, to analyse this data with that model on purpose, add --config.analysis.data=config "
      "(the artifacts record it)"
      if data_only
      else ""
  )
  raise errors.WorkdirError(
      f"Workdir {wd.root} holds a run trained with other settings ({fields}); {what} was not "
      f"analysed and nothing was written. Use the config it was trained with "
      f"(--config=configs/imported.py:{wd.root}),{way_out} or use a new --workdir."
  )


def _checked(config, wd: workdir_lib.Workdir, ds, *, model: bool = True):
  """(workdir, differs) after `check_identity`: for other data on purpose, the workdir whose
  artifacts and figures go to analysis/other-data-<hash>/ (and figures/...), so that an
  analysis of other data never replaces the run's own."""
  differs = check_identity(config, wd, ds, model=model)
  if not differs:
    return wd, differs
  digest = hashlib.sha1(json.dumps(differs, sort_keys=True).encode()).hexdigest()[:10]
  view = workdir_lib.Workdir(wd.root, other_data=f"other-data-{digest}")
  logging.warning("Its artifacts go to %s and figures to %s.", view.analysis, view.figures)
  return view, differs


def load_context(config, workdir) -> Context:
  """Restores the checkpoint `config.analysis.checkpoint` of `workdir` (refusing one of
  another model, or data other than the run's: `check_identity`) and reads the test split."""
  wd = workdir_lib.Workdir(workdir)
  model, variables, info, mesh, ds = loop.restore_model(config, wd.root, config.analysis.checkpoint)
  wd, differs = _checked(config, wd, ds)
  images, labels = ds.arrays("test")
  return Context(
      config,
      wd,
      model,
      variables,
      info,
      mesh,
      ds,
      normalised(config, images),
      labels,
      ds.class_names,
      differs,
      classmap.output_order(config),
  )


def load_data(config, workdir) -> Context:
  """The normalised test split without a model (for stages of the data alone, e.g. ADCS):
  no checkpoint is needed; the dataset is prepared if it is not yet. A workdir that records
  a run of other data is refused (`check_identity`): its analysis is never replaced."""
  from freqjax.data import datasets  # pylint: disable=g-import-not-at-top

  ds = datasets.prepare(config.data)
  wd = workdir_lib.Workdir(workdir)
  wd, differs = _checked(config, wd, ds, model=False)
  images, labels = ds.arrays("test")
  mesh = parallel.make_mesh(int(config.train.num_devices))
  return Context(
      config,
      wd,
      None,
      None,
      {},
      mesh,
      ds,
      normalised(config, images),
      labels,
      ds.class_names,
      differs,
  )


def ensure(config, workdir, ctx: Context | None) -> Context:
  return ctx if ctx is not None else load_context(config, workdir)


def fresh(path: str, kind: str, fingerprint: str) -> artifacts.Artifact | None:
  """The artifact at `path` if it is complete and was computed with these inputs."""
  try:
    art = artifacts.load(path, kind)
  except artifacts.ArtifactError:
    return None
  return art if art.meta.get("fingerprint") == fingerprint else None


def cached(
    path: str,
    kind: str,
    fingerprint: str,
    compute: Callable[[], tuple[dict, dict]],
    after_save: Callable[[dict], None] | None = None,
) -> artifacts.Artifact:
  """The one cached-stage protocol: reuse the artifact at `path` if its fingerprint matches;
  else `compute()` -> (arrays, meta), on process 0 draw `after_save(arrays)` (e.g. a figure)
  and then save the artifact, wait for every process, and reload what was saved. The figure
  comes first: a launch killed between the two redraws it, since the artifact is missing
  (the other way round, a kill would leave a finished artifact without its figure)."""
  art = fresh(path, kind, fingerprint)
  if art is not None:
    logging.info("%s: reusing %s", kind, path)
    return art
  arrays, meta = compute()
  if parallel.is_main_process():
    if after_save is not None:
      after_save(arrays)
    artifacts.save(path, kind, arrays, dict(meta, fingerprint=fingerprint))
  parallel.sync(f"freqjax_stage_{kind}")
  return artifacts.load(path, kind)


def partial_store(parent: str, fingerprint: str):
  """The engine's chunk store of one computation: <parent>/<fingerprint>/. Computations with
  other settings keep their own folders, so none touches another's partial work."""
  from freqjax.spectral import dfm as dfm_lib  # pylint: disable=g-import-not-at-top

  return dfm_lib.ChunkStore(os.path.join(parent, fingerprint), {"fingerprint": fingerprint})


def discard_partial(store, parent: str) -> None:
  """Once the artifact holds its chunks: removes the store (and `parent`, if now empty)."""
  store.discard()
  if parallel.is_main_process() and os.path.isdir(parent) and not os.listdir(parent):
    os.rmdir(parent)


def stage(fn):
  """Decorates a stage's `run(config, workdir, ...)`: it holds the workdir's lock."""

  @functools.wraps(fn)
  def wrapped(config, workdir, *args, **kwargs):
    with workdir_lib.locked(workdir):
      return fn(config, workdir, *args, **kwargs)

  return wrapped
