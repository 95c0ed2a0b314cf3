"""The run report: one Markdown page (report.md) in the workdir with the tables and figures
of summary.json and the figures/ folder."""

from __future__ import annotations

import os

from freqjax import artifacts, workdir as workdir_lib
from freqjax.evaluation import shortcut


def _table(header, rows) -> str:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(out)


def _training_section(summary: dict, train: dict, names) -> list[str]:
  analysed = ["test accuracy (analysed)"] + [f"{a:.3f}" for a in summary["test_per_class_accuracy"]]
  if train.get("imported"):  # a model trained elsewhere (launch/import_model.py)
    imp = train["imported"]
    return [
        "## Model",
        f"Imported from `{imp['source']}` ({imp['format']}, {imp['naming']} naming), not "
        f"trained here. Test accuracy: **{100 * summary['test_accuracy']:.2f}%**.",
        "",
        _table(["class"] + names, [analysed]),
        "",
    ]
  return [
      "## Training",
      f"Test accuracy of the analysed checkpoint (step {summary['checkpoint_step']}): "
      f"**{100 * summary['test_accuracy']:.2f}%**; of the last one (step {train['steps']}, "
      f"{train['epochs_completed']} epochs): {100 * train['test_accuracy']:.2f}%.",
      "",
      _table(
          ["class"] + names,
          [
              analysed,
              ["test accuracy (last)"] + [f"{a:.3f}" for a in train["test_per_class_accuracy"]],
          ],
      ),
      "",
  ]


CLASS_MAP_ANALYSES = ("adcs", "dfm", "shortcut", "sensitivity", "heatmap", "test_accuracy")


def _class_map_section(summary: dict) -> list[str]:
  """A model with more outputs than classes: which output each class is, and how each
  analysis uses the map (summary.json's 'class_map'); nothing for the identity."""
  m = summary.get("class_map")
  if not m:
    return []
  return [
      "## Class map",
      f"The model has {m['num_outputs']} outputs; each class is one of them (class → output: "
      + ", ".join(f"{name} → {i}" for name, i in m["classes"].items())
      + ").",
      "",
      _table(["analysis", "uses the map as"], [[k, m[k]] for k in CLASS_MAP_ANALYSES if k in m]),
      "",
  ]


def _search_section(summary: dict, names) -> list[str]:
  """The DFM search's method and cost; for `auto`, each class's missed-mass bound."""
  sr = summary.get("dfm_search") or {}
  method = sr.get("method", "exhaustive")
  fwd, full = sr.get("forward_equivalents"), sr.get("exhaustive_forwards")
  lines = [f"Search: `{method}`"]
  if method != "exhaustive" and fwd and full:
    lines[0] += f", {fwd:,.0f} forward-equivalents ({full / fwd:.1f}× fewer than exhaustive)"
  lines[0] += "."
  if "missed_mass_bound_per_class" in sr:
    verdict = {
        "bound": "yes",
        "all scored": "yes (exact)",
        "floor": "no: stopped at the ranking's split-half floor",
        "budget": "**no (budget)**",
    }
    raced = sr.get("raced_per_class", sr["scored_per_class"])
    rows = [
        [n, f"{b:.3f}", verdict.get(stop, stop), r, k]
        for n, b, stop, r, k in zip(
            names,
            sr["missed_mass_bound_per_class"],
            sr["stop_per_class"],
            raced,
            sr["scored_per_class"],
        )
    ]
    lines += [
        "",
        f"Bound on the exhaustive top-{100 * summary['dfm_threshold']:g}% score mass each DFM "
        f"may have missed (tolerance {sr['tolerance']:g}); it holds {sr['confidence']}.",
        "",
        _table(
            [
                "class",
                "missed-mass bound",
                "within tolerance",
                "candidates scored (on some images)",
                "on every image",
            ],
            rows,
        ),
    ]
  return lines + [""]


def render(config, workdir, summary: dict) -> str:
  wd = workdir_lib.Workdir(workdir)
  workdir = wd.root

  def fig(name, alt) -> str:
    return f"![{alt}](figures/{name})" if os.path.exists(wd.figure(name)) else ""

  names = summary["class_names"]
  t = summary["dfm_threshold"]
  train = wd.train_results()
  sc = artifacts.load(wd.artifact("shortcut"), "shortcut")
  dfm_meta = artifacts.load(wd.artifact("dfm"), "dfm").meta
  parts = [
      f"# freqjax report: {config.data.name}, {config.model.name}",
      "",
      f"Workdir `{workdir}`. Model {config.model.name} (width ×{config.model.width_multiplier},"
      f" {config.model.stem} stem), checkpoint step {summary['checkpoint_step']} "
      f"(`{config.analysis.checkpoint}` by validation loss), dataset `{config.data.name}` "
      f"({config.data.image_size}×{config.data.image_size}, {len(names)} classes).",
      "",
      *_training_section(summary, train, names),
      *_class_map_section(summary),
      "## ADCS (which frequencies distinguish each class)",
      f"Variant: `{config.analysis.adcs}`.",
      "",
      fig("adcs.png", "ADCS"),
      "",
      "## Dominant frequency maps",
      f"Candidates: {dfm_meta['candidates']['mode']}, patch {dfm_meta['patch_size']}, "
      f"{dfm_meta['candidates']['num_candidates']} per class; ranking took "
      f"{summary.get('dfm_seconds') or 0:.0f} s"
      + (
          f" at {dfm_meta['rate_candidate_images_per_s']:.0f} candidate-images/s."
          if dfm_meta.get("rate_candidate_images_per_s")
          else "."
      ),
      "",
      *_search_section(summary, names),
      fig("dfm_grid.png", "DFM grid"),
      "",
      fig("scores.png", "candidate scores"),
      "",
  ]
  if "planted_recall" in summary:
    rows = [
        [
            n,
            summary["planted_cells"][k],
            summary["dfm_cells"][k],
            f"{summary['planted_recall'][k]:.2f}",
            f"{summary['planted_precision'][k]:.2f}",
            f"{summary['top_planted_hits'][k]}/{summary['planted_cells'][k]}",
        ]
        for k, n in enumerate(names)
    ]
    parts += [
        f"### Planted frequencies recovered (top {100 * t:g}% DFM)",
        "Planted cells: both cells of each conjugate pair of the class's special "
        "frequencies (C0..C2) or of its vocabulary (C3). Recall = planted cells in the DFM / "
        "planted cells; precision = planted cells in the DFM / DFM cells; last column: "
        "planted cells among the top-|planted| cells by score.",
        "",
        _table(
            ["class", "planted cells", "DFM cells", "recall", "precision", "top-|planted| hits"],
            rows,
        ),
        "",
    ]
  parts += [
      f"## Shortcut test (DFMs at {100 * t:g}%)",
      "Each class's DFM filters the whole test set; TPR_k and FPR_k of class k on its own "
      "DFM's images. High TPR with a small DFM marks a frequency shortcut; high FPR shows it "
      "also pulls other classes to k. Last two columns: the DFM's frequencies removed "
      "instead (DC kept).",
      "",
      shortcut.table(sc.arrays, names),
      "",
  ]
  subset = shortcut.subset_view(sc.arrays)
  if subset is not None:
    parts += [
        f"Above, the prediction over all the model's {summary['class_map']['num_outputs']} "
        "outputs (one outside the classes' is a miss: column 'other' of the confusion "
        f"matrices). Restricted to the {len(names)} classes' outputs (test accuracy "
        f"{100 * summary['test_accuracy_subset']:.2f}%):",
        "",
        shortcut.table(subset, names),
        "",
    ]
  parts += [
      fig("shortcut_tpr_fpr.png", "TPR/FPR"),
      "",
      fig("confusion_dfm.png", "confusion matrices"),
      "",
  ]
  other = wd.artifact("shortcut", "_dfms")
  if os.path.exists(other):
    art = artifacts.load(other, "shortcut")
    parts += [
        f"### Shortcut test with the DFMs of `{config.analysis.shortcut_dfms}`",
        "",
        shortcut.table(art.arrays, names),
        "",
    ]
  if os.path.exists(wd.artifact("sensitivity")):
    art = artifacts.load(wd.artifact("sensitivity"), "sensitivity")
    parts += [
        "## Fourier sensitivity",
        f"Per class, the mean |F(∇ₓ L)|² of its test images (L: the {art.meta['target']}; "
        "unitary FFT, summed over channels), log scale, and its radial average.",
        "",
        fig("sensitivity.png", "Fourier sensitivity"),
        "",
    ]
  if os.path.exists(wd.artifact("heatmap")):
    art = artifacts.load(wd.artifact("heatmap"), "heatmap")
    parts += [
        "## Fourier heat map",
        f"Test error with a Fourier basis image of L2 norm ε = {art.meta['eps']:g} (per "
        f"channel, random sign, pixels clipped to [0, 1]) added to every test image, per "
        f"frequency (patch {art.meta['patch_size']}); clean error "
        f"{float(art['clean_error']):.3f}, mean {float(art['error'].mean()):.3f}, max "
        f"{float(art['error'].max()):.3f}; took {art.meta['seconds']:.0f} s.",
        "",
        fig("heatmap.png", "Fourier heat map"),
        "",
    ]
  if os.path.exists(wd.figure("overview.png")):
    parts += ["## Side by side", "", fig("overview.png", "ADCS, DFMs, sensitivity, heat map"), ""]
  for name, ood in summary.get("ood", {}).items():
    parts += [
        f"### OOD test set `{name}`",
        "",
        _table(
            ["class", "TPR", "FPR", "TPR unfiltered", "FPR unfiltered"],
            [
                [
                    n,
                    f"{ood['tpr'][k]:.3f}",
                    f"{ood['fpr'][k]:.3f}",
                    f"{ood['tpr_unfiltered'][k]:.3f}",
                    f"{ood['fpr_unfiltered'][k]:.3f}",
                ]
                for k, n in enumerate(names)
            ],
        ),
        "",
    ]
  if "learned_step" in summary:
    views = list(summary["learned_step"])
    rows = [
        [v]
        + [s if s >= 0 else "never" for s in summary["learned_step"][v]]
        + [", ".join(summary["learned_first"][v]) or "-"]
        for v in views
    ]
    parts += [
        "## Learning dynamics",
        f"First evaluated step at which TPR - FPR >= {config.dynamics.threshold} per class, on "
        f"each view of the test set (evaluated every {config.dynamics.every_steps} steps). On a "
        "view that keeps one band, a class whose content lies elsewhere cannot be told apart, "
        "and images of the other classes may be pulled towards the band's class: TPR alone "
        "(dotted in the figure) shows how well a class is recognised from that band.",
        "",
        _table(["view"] + names + ["learned first"], rows),
        "",
        fig("dynamics.png", "learning dynamics"),
        "",
    ]
  parts += [
      "## Time per stage in the invocation that wrote this report (s)",
      "",
      _table(list(summary["stage_seconds"]), [list(summary["stage_seconds"].values())]),
      "",
  ]
  return "\n".join(parts)


def write(config, workdir, summary: dict) -> str:
  path = workdir_lib.Workdir(workdir).report
  artifacts.write_text(path, render(config, workdir, summary))
  return path


def learning_dynamics_table(result: dict, class_names) -> str:
  """Markdown table of the learning-order study (studies.learning_dynamics.run)."""
  header = (
      ["Syn-k", "seed"]
      + [f"{n} learned" for n in class_names]
      + ["first", "margin (steps)", f"{class_names[3]} in its band only", "test acc"]
  )
  rows = []
  for r in result["runs"]:
    fmt = lambda s: str(s) if s >= 0 else "never"
    rows.append(
        [f"Syn-{r['band']}", r["seed"]]
        + [fmt(s) for s in r["learned_step"]]
        + [
            ", ".join(r["first"]) or "-",
            r["margin_steps"] if r["margin_steps"] is not None else "-",
            fmt(r["learned_step_keep_band"][3]),
            f"{r['test_accuracy_at_end']:.3f}",
        ]
    )
  return (
      f"Step at which each class is first learned (TPR - FPR >= {result['threshold']} on the "
      f"full test set, evaluated every {result['every_steps']} steps up to step "
      f"{result.get('last_evaluated_step', result['until_step'])}). {class_names[3]} "
      "strictly first in "
      f"{result['c3_first_count']} of {result['total']} runs.\n\n" + _table(header, rows) + "\n"
  )
