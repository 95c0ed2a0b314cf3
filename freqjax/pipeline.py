"""The experiment pipeline and its stages, one function each (the launchers call them).

    prepare data -> train -> ADCS -> DFMs -> shortcut test -> figures -> report

Everything lands in the workdir:
    config.json, checkpoints/, metrics.jsonl, tensorboard/, train_results.json   (training)
    analysis/adcs.npz, scores.npz, dfm.npz, shortcut.npz, shortcut_ood_<name>.npz,
    analysis/greedy.npz, analysis/dynamics.npz                                    (artifacts)
    figures/*.png, report.md, summary.json
Rerunning with the same workdir reuses every finished stage: an artifact whose recorded
fingerprint (checkpoint step, dataset, analysis settings) matches is not recomputed, and
training resumes or is skipped when complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from freqjax import artifacts, parallel, plotting, report as report_lib
from freqjax.data import augment, datasets
from freqjax.evaluation import dynamics as dyn_lib, metrics, shortcut
from freqjax.spectral import adcs as adcs_lib, candidates as cand_lib, dfm as dfm_lib
from freqjax.training import logs, loop


def _paths(workdir: str) -> dict:
  a = os.path.join(workdir, "analysis")
  return {"analysis": a, "figures": os.path.join(workdir, "figures"),
          "adcs": os.path.join(a, "adcs.npz"), "scores": os.path.join(a, "scores.npz"),
          "dfm": os.path.join(a, "dfm.npz"), "shortcut": os.path.join(a, "shortcut.npz"),
          "greedy": os.path.join(a, "greedy.npz"), "dynamics": os.path.join(a, "dynamics.npz"),
          "dfm_partial": os.path.join(a, "dfm_partial"),
          "report": os.path.join(workdir, "report.md"),
          "summary": os.path.join(workdir, "summary.json")}


@dataclasses.dataclass
class Context:
  """A trained model and its normalised test set, shared by the analysis stages."""
  config: Any
  workdir: str
  model: Any
  variables: Any
  checkpoint: dict
  mesh: Any
  dataset: Any
  images: np.ndarray  # normalised test images (N, S, S, 3) float32
  labels: np.ndarray
  class_names: list

  def apply_fn(self, variables, x):
    return self.model.apply(variables, x, train=False)

  def meta(self, **extra) -> dict:
    c = self.config
    return {"model": c.model.to_dict(), "checkpoint": self.checkpoint, "config": c.to_dict(),
            "dataset": {"name": c.data.name, "path": self.dataset.path, "split": "test",
                        "num_images": int(len(self.labels))},
            "classes": self.class_names, "image_size": int(c.data.image_size),
            "layout": "centred", **extra}

  def fingerprint(self, *parts) -> str:
    blob = json.dumps([self.checkpoint.get("checkpoint_step"), self.dataset.path,
                       [p.to_dict() if hasattr(p, "to_dict") else p for p in parts]],
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def normalised(config, images: np.ndarray, batch: int = 512) -> np.ndarray:
  """uint8 test images -> normalised float32 at image_size (the evaluation transform)."""
  fn = jax.jit(augment.make_eval_transform(config))
  return np.concatenate([np.asarray(fn(images[i:i + batch]))
                         for i in range(0, len(images), batch)])


def load_context(config, workdir: str) -> Context:
  model, variables, info, mesh, ds = loop.restore_model(config, workdir, config.analysis.checkpoint)
  images, labels = ds.arrays("test")
  return Context(config, os.path.abspath(workdir), model, variables, info, mesh, ds,
                 normalised(config, images), labels, ds.class_names)


def _fresh(path: str, kind: str, fingerprint: str) -> artifacts.Artifact | None:
  """The artifact at `path` if it is complete and was computed with these inputs."""
  try:
    art = artifacts.load(path, kind)
  except artifacts.ArtifactError:
    return None
  return art if art.meta.get("fingerprint") == fingerprint else None


# ------------------------------------------------------------------------------ stages ----

def run_adcs(config, workdir: str, ctx: Context | None = None) -> artifacts.Artifact:
  ctx = ctx or load_context(config, workdir)
  p = _paths(workdir)
  variant = config.analysis.adcs
  fp = ctx.fingerprint("adcs", variant)
  art = _fresh(p["adcs"], "adcs", fp)
  if art is not None:
    logging.info("ADCS: reusing %s", p["adcs"])
    return art
  b = int(config.analysis.batch_size)
  d = int(ctx.mesh.devices.size)
  b = -(-b // d) * d
  batches = []
  for lo in range(0, len(ctx.labels), b):
    x, y = ctx.images[lo:lo + b], ctx.labels[lo:lo + b]
    valid = np.ones(b, bool)
    if len(y) < b:
      valid[len(y):] = False
      x = np.concatenate([x, np.zeros((b - len(y),) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros(b - len(y), y.dtype)])
    batches.append({"image": x, "label": y, "valid": valid})
  sums, counts = adcs_lib.class_amplitude_sums(batches, len(ctx.class_names), ctx.mesh, variant)
  maps = adcs_lib.adcs_from_sums(sums, counts, variant)
  arrays = {"adcs": maps, "class_mean_amplitude": sums / np.maximum(counts, 1)[:, None, None, None],
            "counts": counts}
  if parallel.is_main_process():
    artifacts.save(p["adcs"], "adcs", arrays, ctx.meta(variant=variant, fingerprint=fp))
    plotting.adcs(maps, ctx.class_names, os.path.join(p["figures"], "adcs.png"),
                  title=f"ADCS ({variant}) — {config.data.name}")
  parallel.sync("freqjax_adcs")
  return artifacts.load(p["adcs"], "adcs")


def run_dfm(config, workdir: str, ctx: Context | None = None) -> artifacts.Artifact:
  """Ranks every candidate for every class; writes scores.npz and dfm.npz; prints DFMs."""
  ctx = ctx or load_context(config, workdir)
  a = config.analysis
  p = _paths(workdir)
  size = int(config.data.image_size)
  cands = cand_lib.make(size, int(a.patch_size), a.candidates)
  fp = ctx.fingerprint("dfm", cands.describe(), list(a.thresholds))
  art = _fresh(p["dfm"], "dfm", fp)
  if art is None:
    engine = dfm_lib.Engine(ctx.apply_fn, ctx.variables, ctx.mesh, cands,
                            memory_budget_mb=a.memory_budget_mb,
                            progress=config.train.progress)
    store = dfm_lib.ChunkStore(p["dfm_partial"], {"fingerprint": fp})
    t0 = time.time()
    raw = engine.rank(ctx.images, ctx.labels, range(len(ctx.class_names)), store=store,
                      class_names=ctx.class_names)
    seconds = time.time() - t0
    maps = dfm_lib.score_maps(cands, raw)
    maps_dfm = dfm_lib.dfms(maps, a.thresholds)
    meta = ctx.meta(patch_size=int(a.patch_size), candidates=cands.describe(),
                    thresholds=list(a.thresholds), fingerprint=fp, seconds=seconds,
                    rate_candidate_images_per_s=engine.last_rate)
    if parallel.is_main_process():
      artifacts.save(p["scores"], "scores", {"scores": maps, "candidate_scores": raw,
                                             "candidate_rects": cands.rects}, meta)
      artifacts.save(p["dfm"], "dfm", {"dfm": maps_dfm}, meta)
      store.discard()
    parallel.sync("freqjax_dfm")
    art = artifacts.load(p["dfm"], "dfm")
  if parallel.is_main_process():
    print(dfm_summary(art, ctx.dataset, float(a.threshold)))
  if a.greedy:
    run_greedy(config, workdir, ctx)
  return art


def dfm_at(art: artifacts.Artifact, threshold: float) -> np.ndarray:
  ts = [float(t) for t in art.meta["thresholds"]]
  for i, t in enumerate(ts):
    if abs(t - threshold) < 1e-9:
      return art["dfm"][i]
  raise ValueError(f"Threshold {threshold} was not computed; the DFM artifact has {ts}. "
                   "Add it to config.analysis.thresholds and rerun the DFM stage.")


def planted_overlap(dfm_maps: np.ndarray, planted: np.ndarray, scores: np.ndarray | None = None):
  """Per class: recall = |DFM ∩ planted| / |planted|, precision = |DFM ∩ planted| / |DFM|,
  and (with scores) how many of the top-|planted| cells by score are planted."""
  inter = (dfm_maps & planted).reshape(len(planted), -1).sum(1)
  out = {"planted_recall": (inter / planted.reshape(len(planted), -1).sum(1)).tolist(),
         "planted_precision": (inter / np.maximum(dfm_maps.reshape(len(planted), -1).sum(1), 1)).tolist(),
         "planted_cells": planted.reshape(len(planted), -1).sum(1).tolist(),
         "dfm_cells": dfm_maps.reshape(len(planted), -1).sum(1).tolist()}
  if scores is not None:
    top = []
    for s, pl in zip(scores, planted):
      n = int(pl.sum())
      order = np.argsort(-s.ravel(), kind="stable")[:n]
      top.append(int(pl.ravel()[order].sum()))
    out["top_planted_hits"] = top
  return out


def _half_plane_freqs(mask: np.ndarray) -> list[tuple[int, int]]:
  """(u, v) of a centred mask's cells, one per conjugate pair (u > 0, or u = 0 and v >= 0)."""
  s = mask.shape[-1]
  uv = [(int(i) - s // 2, int(j) - s // 2) for i, j in np.argwhere(mask)]
  return sorted({(u, v) for u, v in uv if u > 0 or (u == 0 and v >= 0)})


def dfm_summary(art: artifacts.Artifact, ds, threshold: float) -> str:
  maps = dfm_at(art, threshold)
  names = art.meta["classes"]
  s = maps.shape[-1]
  lines = [f"DFMs at {100 * threshold:g}% ({art.meta['candidates']['mode']} candidates, "
           f"patch {art.meta['patch_size']}, {s}x{s}):"]
  planted = datasets.planted_masks(ds)
  ov = planted_overlap(maps, planted) if planted is not None else None
  for k, name in enumerate(names):
    line = f"  {name}: {int(maps[k].sum())} cells"
    if ov is not None:
      line += (f"; planted {ov['planted_cells'][k]}, of them in DFM "
               f"{int(round(ov['planted_recall'][k] * ov['planted_cells'][k]))} "
               f"(recall {ov['planted_recall'][k]:.2f}, precision "
               f"{ov['planted_precision'][k]:.2f})")
      line += "\n      planted (u, v): " + " ".join(
          f"({u},{v}){'' if maps[k][u + s // 2, v + s // 2] else ' missed'}"
          for u, v in _half_plane_freqs(planted[k]))
    if s <= 64:
      line += "\n      DFM (u, v) with u >= 0: " + " ".join(
          f"({u},{v})" for u, v in _half_plane_freqs(maps[k]))
    lines.append(line)
  return "\n".join(lines)


def run_greedy(config, workdir: str, ctx: Context) -> artifacts.Artifact:
  a = config.analysis
  p = _paths(workdir)
  scores = artifacts.load(p["scores"], "scores")
  cands = cand_lib.make(int(config.data.image_size), int(a.patch_size), a.candidates)
  fp = ctx.fingerprint("greedy", cands.describe(), a.greedy_tolerance)
  art = _fresh(p["greedy"], "greedy", fp)
  if art is not None:
    return art
  dfms, counts, orders = [], [], []
  for c in range(len(ctx.class_names)):
    order = np.argsort(scores["candidate_scores"][c], kind="stable")  # least important first
    idx = ctx.labels == c
    g = dfm_lib.greedy_removal(ctx.apply_fn, ctx.variables, ctx.mesh, ctx.images[idx], c,
                               cands, order, int(a.greedy_tolerance), int(a.greedy_parallel),
                               progress=config.train.progress)
    dfms.append(g["dfm"])
    counts.append(g["counts"][-1])
    orders.append(order)
  meta = ctx.meta(patch_size=int(a.patch_size), candidates=cands.describe(),
                  tolerance=int(a.greedy_tolerance), fingerprint=fp)
  if parallel.is_main_process():
    artifacts.save(p["greedy"], "greedy", {"dfm": np.stack(dfms), "order": np.stack(orders),
                                           "final_correct": np.array(counts)}, meta)
  parallel.sync("freqjax_greedy")
  return artifacts.load(p["greedy"], "greedy")


def run_shortcut_test(config, workdir: str, ctx: Context | None = None) -> artifacts.Artifact:
  """DFM-filtered TPR/FPR on the test set (and every OOD folder test set in the config)."""
  ctx = ctx or load_context(config, workdir)
  a = config.analysis
  p = _paths(workdir)
  dfm_art = artifacts.load(p["dfm"], "dfm")
  maps = dfm_at(dfm_art, float(a.threshold))
  sets = [("test", p["shortcut"], ctx.images, ctx.labels)]
  for root in a.ood_dirs:
    name = os.path.basename(os.path.normpath(root))
    ood = datasets.prepare_ood(config.data, root, a.ood_split, label=f"ood_{name}")
    x, y = ood.arrays("test")
    sets.append((f"ood:{name}", os.path.join(p["analysis"], f"shortcut_ood_{name}.npz"),
                 normalised(config, x), y))
  out = None
  for name, path, x, y in sets:
    fp = ctx.fingerprint("shortcut", name, float(a.threshold), dfm_art.meta.get("fingerprint"))
    art = _fresh(path, "shortcut", fp)
    if art is None:
      res = shortcut.run(ctx.apply_fn, ctx.variables, ctx.mesh, x, y, maps,
                         batch_size=int(a.batch_size))
      if parallel.is_main_process():
        artifacts.save(path, "shortcut", res, ctx.meta(
            threshold=float(a.threshold), test_set=name, fingerprint=fp,
            patch_size=dfm_art.meta["patch_size"]))
      parallel.sync("freqjax_shortcut")
      art = artifacts.load(path, "shortcut")
    if parallel.is_main_process():
      artifacts.write_json(os.path.splitext(path)[0] + ".json", {
          "test_set": name, "threshold": float(a.threshold), "classes": ctx.class_names,
          **art.arrays})
      print(f"Shortcut test on {name} with DFMs at {100 * float(a.threshold):g}%:")
      print(shortcut.table(art.arrays, ctx.class_names))
    out = out or art
  return out


def run_dynamics(config, workdir: str) -> artifacts.Artifact | None:
  """Learning-dynamics artifact from the training log (None if none were recorded)."""
  p = _paths(workdir)
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  names = list(config.data.class_names)
  dyn = dyn_lib.collect(logs.read_jsonl(path), names)
  if not dyn["views"]:
    return None
  steps = dyn_lib.learned_steps(dyn, float(config.dynamics.threshold))
  if parallel.is_main_process():
    artifacts.save(p["dynamics"], "dynamics",
                   {"steps": dyn["steps"], "tpr": dyn["tpr"], "fpr": dyn["fpr"],
                    "acc": dyn["acc"], "learned_step": steps},
                   {"views": dyn["views"], "classes": names,
                    "threshold": float(config.dynamics.threshold),
                    "every_steps": int(config.dynamics.every_steps)})
    plotting.dynamics(dyn, names, os.path.join(p["figures"], "dynamics.png"),
                      float(config.dynamics.threshold), steps)
  parallel.sync("freqjax_dynamics")
  return artifacts.load(p["dynamics"], "dynamics")


def run_figures(config, workdir: str, ctx: Context) -> None:
  p = _paths(workdir)
  if not parallel.is_main_process():
    return
  f = p["figures"]
  scores = artifacts.load(p["scores"], "scores")
  dfm_art = artifacts.load(p["dfm"], "dfm")
  names = ctx.class_names
  plotting.score_maps(scores["scores"], names, os.path.join(f, "scores.png"))
  rows = {f"top {100 * t:g}%": dfm_art["dfm"][i] for i, t in enumerate(dfm_art.meta["thresholds"])}
  if artifacts.exists(p["greedy"], "greedy"):
    rows["greedy (DFM-X)"] = artifacts.load(p["greedy"], "greedy")["dfm"]
  plotting.dfm_grid(rows, names, os.path.join(f, "dfm_grid.png"),
                    planted=datasets.planted_masks(ctx.dataset))
  sc = artifacts.load(p["shortcut"], "shortcut")
  plotting.confusion(sc["confusion_unfiltered"], names,
                     os.path.join(f, "confusion_unfiltered.png"), "Unfiltered test set")
  plotting.confusion_grid(sc["confusion"], names, os.path.join(f, "confusion_dfm.png"))
  plotting.tpr_fpr_bars(sc.arrays, names, os.path.join(f, "shortcut_tpr_fpr.png"),
                        f"Shortcut test, DFMs at {100 * float(config.analysis.threshold):g}%")


def summarise(config, workdir: str, ctx: Context, stage_seconds: dict) -> dict:
  p = _paths(workdir)
  with open(os.path.join(workdir, "train_results.json")) as fh:
    train = json.load(fh)
  sc = artifacts.load(p["shortcut"], "shortcut")
  dfm_art = artifacts.load(p["dfm"], "dfm")
  scores = artifacts.load(p["scores"], "scores")
  summary = {
      "config": config.data.name, "model": config.model.name, "class_names": ctx.class_names,
      # The analysed checkpoint ('best' by validation loss by default) on the test set, and
      # the last checkpoint's, as training reported it.
      "test_accuracy": metrics.accuracy(sc["confusion_unfiltered"]),
      "test_per_class_accuracy": metrics.per_class_accuracy(sc["confusion_unfiltered"]).tolist(),
      "final_test_accuracy": train["test_accuracy"], "final_step": train["steps"],
      "checkpoint_step": ctx.checkpoint["checkpoint_step"],
      "dfm_threshold": float(config.analysis.threshold),
      "tpr": sc["tpr"].tolist(), "fpr": sc["fpr"].tolist(),
      "tpr_unfiltered": sc["tpr_unfiltered"].tolist(),
      "fpr_unfiltered": sc["fpr_unfiltered"].tolist(),
      "dfm_keep_fraction": sc["keep_fraction"].tolist(),
      "dfm_seconds": dfm_art.meta.get("seconds"),
      "stage_seconds": stage_seconds,
  }
  planted = datasets.planted_masks(ctx.dataset)
  if planted is not None:
    summary.update(planted_overlap(dfm_at(dfm_art, float(config.analysis.threshold)), planted,
                                   scores["scores"]))
  if artifacts.exists(p["dynamics"], "dynamics"):
    dyn = artifacts.load(p["dynamics"], "dynamics")
    steps = dyn["learned_step"]
    summary["learned_step"] = {v: steps[i].tolist() for i, v in enumerate(dyn.meta["views"])}
    summary["learned_first"] = {v: [ctx.class_names[c] for c in first] for v, first in
                                zip(dyn.meta["views"], dyn_lib.learned_first(steps))}
  for root in config.analysis.ood_dirs:
    name = os.path.basename(os.path.normpath(root))
    ood = artifacts.load(os.path.join(p["analysis"], f"shortcut_ood_{name}.npz"), "shortcut")
    summary.setdefault("ood", {})[name] = {
        "tpr": ood["tpr"].tolist(), "fpr": ood["fpr"].tolist(),
        "tpr_unfiltered": ood["tpr_unfiltered"].tolist(),
        "fpr_unfiltered": ood["fpr_unfiltered"].tolist()}
  return summary


def run_pipeline(config, workdir: str) -> dict:
  """The main job: every stage, reusing finished ones; returns summary.json's content."""
  workdir = os.path.abspath(workdir)
  p = _paths(workdir)
  seconds = {}

  def timed(name, fn):
    t0 = time.time()
    out = fn()
    seconds[name] = round(time.time() - t0, 1)
    logging.info("stage %s: %.1f s", name, seconds[name])
    return out

  timed("prepare", lambda: datasets.prepare(config.data))
  if _training_done(workdir):
    logging.info("train: finished run found in %s; reusing it", workdir)
    seconds["train"] = 0.0
  else:
    timed("train", lambda: loop.train_and_evaluate(config, workdir))
  ctx = timed("restore", lambda: load_context(config, workdir))
  timed("adcs", lambda: run_adcs(config, workdir, ctx))
  timed("dfm", lambda: run_dfm(config, workdir, ctx))
  timed("shortcut", lambda: run_shortcut_test(config, workdir, ctx))
  timed("dynamics", lambda: run_dynamics(config, workdir))
  timed("figures", lambda: run_figures(config, workdir, ctx))
  summary = summarise(config, workdir, ctx, seconds)
  if parallel.is_main_process():
    artifacts.write_json(p["summary"], summary)
    report_lib.write(config, workdir, summary)
    logging.info("Report: %s", p["report"])
  return summary


def _training_done(workdir: str) -> bool:
  path = os.path.join(workdir, "train_results.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return bool(json.load(f).get("done"))


def run_learning_dynamics_study(config, workdir: str, bands=(1, 2, 3, 4), seeds=(0, 1, 2)) -> dict:
  """The paper's learning-order experiment on Syn-1..4: train each (band, seed) for
  `dynamics.until_step` steps, evaluating every `dynamics.every_steps` steps on the full test
  set and on the view that keeps only C3's band; report the step at which each class is
  learned (TPR - FPR >= threshold on the full view) and whether C3 is first.

  Writes <workdir>/syn<k>_seed<s>/ (a training run each, with figures/dynamics.png),
  learning_dynamics.json and learning_dynamics.md. Finished runs are reused.
  """
  workdir = os.path.abspath(workdir)
  every = int(config.dynamics.every_steps or 5)
  rows = []
  for band in bands:
    for seed in seeds:
      c = config.copy_and_resolve_references()
      c.data.synthetic.band = int(band)
      c.data.name = f"syn{band}" + ("_small" if "small" in config.data.name else "")
      c.seed = int(seed)
      c.dynamics.views = ("full", f"keep_b{band}")
      c.dynamics.every_steps = every
      c.train.max_steps = int(c.dynamics.until_step)
      c.train.epochs = max(int(c.train.epochs), 10**6)  # max_steps ends the run
      run_dir = os.path.join(workdir, f"syn{band}_seed{seed}")
      if not _training_done(run_dir):
        loop.train_and_evaluate(c, run_dir)
      dyn_art = run_dynamics(c, run_dir)
      steps = dyn_art["learned_step"]
      views = dyn_art.meta["views"]
      full = steps[views.index("full")]
      learned = [int(s) for s in full]
      order = sorted((s if s >= 0 else 10**9, k) for k, s in enumerate(learned))
      first = [k for s, k in order if s == order[0][0] and s < 10**9]
      margin = (order[1][0] - order[0][0]) if len(first) == 1 and order[1][0] < 10**9 else None
      with open(os.path.join(run_dir, "train_results.json")) as f:
        acc = json.load(f)["test_accuracy"]
      rows.append({"band": int(band), "seed": int(seed), "learned_step": learned,
                   "learned_step_keep_band": [int(s) for s in steps[views.index(f"keep_b{band}")]],
                   "first": [config.data.class_names[k] for k in first],
                   "c3_strictly_first": first == [3], "margin_steps": margin,
                   "last_evaluated_step": int(dyn_art["steps"].max()),
                   "test_accuracy_at_end": acc})
  result = {"runs": rows, "every_steps": every,
            "until_step": int(config.dynamics.until_step),
            "last_evaluated_step": max(r["last_evaluated_step"] for r in rows),
            "threshold": float(config.dynamics.threshold),
            "c3_first_count": sum(r["c3_strictly_first"] for r in rows), "total": len(rows)}
  if parallel.is_main_process():
    artifacts.write_json(os.path.join(workdir, "learning_dynamics.json"), result)
    artifacts.write_text(os.path.join(workdir, "learning_dynamics.md"),
                         report_lib.learning_dynamics_table(result, config.data.class_names))
    print(report_lib.learning_dynamics_table(result, config.data.class_names))
  return result
