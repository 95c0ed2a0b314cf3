"""The main job end to end on a seconds-long synthetic run, stage reuse, a launcher, and the
analysis notebook executed top to bottom against the workdir this test produces."""

import json
import os
import shutil
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from freqjax import artifacts, errors, pipeline
from freqjax.spectral import candidates as cand_lib, dfm as dfm_lib
from freqjax.stages import context, dfm as dfm_stage, shortcut as shortcut_stage
from freqjax.studies import learning_dynamics
from tests.conftest import REPO, tiny_synthetic_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("pipeline")
  c = tiny_synthetic_config(
      tmp / "data",
      **{
          "train.epochs": 3,
          "dynamics.every_steps": 6,
          "dynamics.until_step": 18,
          "dynamics.views": ("full", "keep_b1"),
          "analysis.greedy": True,
          "analysis.greedy_parallel": 16,
          "analysis.batch_size": 40,
          "analysis.heatmap.in_pipeline": True,
          "analysis.heatmap.patch_size": 4,
      },
  )
  workdir = tmp / "run"
  summary = pipeline.run_pipeline(c, str(workdir))
  return c, workdir, summary


@pytest.fixture(scope="module")
def dfmx_run(run):
  """The same config trained with DFM-X on the run's DFMs, tested on them too."""
  c, workdir, _ = run
  d = c.copy_and_resolve_references()
  d.augment.dfmx.dfms, d.augment.dfmx.p = str(workdir), 0.5
  d.analysis.shortcut_dfms = str(workdir)
  d.analysis.greedy = False
  d.dynamics.every_steps = 0
  after = workdir.parent / "dfmx"
  return d, after, pipeline.run_pipeline(d, str(after))


def test_pipeline_writes_everything(run):
  c, workdir, summary = run
  on_disk = json.loads((workdir / "summary.json").read_text())
  assert on_disk["test_accuracy"] == summary["test_accuracy"]
  for key in (
      "tpr",
      "fpr",
      "tpr_unfiltered",
      "fpr_unfiltered",
      "planted_recall",
      "planted_precision",
  ):
    assert len(on_disk[key]) == 4 and all(0 <= v <= 1 for v in on_disk[key]), key
  assert set(on_disk["learned_step"]) == {"full", "keep_b1"}
  for name in ("adcs", "scores", "dfm", "shortcut", "greedy", "dynamics", "heatmap", "sensitivity"):
    art = artifacts.load(str(workdir / "analysis" / f"{name}.npz"), name)
    if name in ("dfm", "scores", "adcs", "shortcut"):
      assert art.meta["layout"] == "centred" and art.meta["classes"] == ["C0", "C1", "C2", "C3"]
      if name != "adcs":  # ADCS is of the data alone
        assert art.meta["checkpoint"]["checkpoint_step"] > 0
  dfm = artifacts.load(str(workdir / "analysis" / "dfm.npz"), "dfm")
  assert dfm["dfm"].shape == (4, 4, 32, 32)
  assert dfm.meta["thresholds"] == [0.01, 0.05, 0.1, 0.2] and dfm.meta["patch_size"] == 1
  sizes = dfm["dfm"].reshape(4, 4, -1).sum(-1)
  assert (sizes[1] >= 51).all() and (sizes[0] < sizes[1]).all()  # 5% of 1024 cells, ties kept
  assert not (workdir / "analysis" / "dfm_partial").exists()  # partials go once the DFM is saved
  for fig in (
      "adcs",
      "dfm_grid",
      "scores",
      "confusion_unfiltered",
      "confusion_dfm",
      "shortcut_tpr_fpr",
      "dynamics",
      "heatmap",
      "sensitivity",
      "overview",
  ):
    assert (workdir / "figures" / f"{fig}.png").stat().st_size > 5000, fig
  heat = artifacts.load(str(workdir / "analysis" / "heatmap.npz"), "heatmap")
  assert heat["error"].shape == (32, 32) and heat.meta["eps"] == 4.0
  assert heat.meta["patch_size"] == 4 and np.all((heat["error"] >= 0) & (heat["error"] <= 1))
  assert len(np.unique(heat["error"][:4, :4])) == 1  # one value per 4×4 patch
  sens = artifacts.load(str(workdir / "analysis" / "sensitivity.npz"), "sensitivity")
  assert sens["sensitivity"].shape == (4, 32, 32) and sens["counts"].sum() == 40
  assert not (workdir / "analysis" / "heatmap_partial").exists()
  report = (workdir / "report.md").read_text()
  for heading in (
      "## Training",
      "## ADCS",
      "## Dominant frequency maps",
      "### Planted frequencies recovered",
      "## Shortcut test",
      "## Learning dynamics",
      "## Fourier sensitivity",
      "## Fourier heat map",
      "## Side by side",
  ):
    assert heading in report
  assert "(figures/dfm_grid.png)" in report
  sc = json.loads((workdir / "analysis" / "shortcut.json").read_text())
  assert sc["classes"] == ["C0", "C1", "C2", "C3"] and len(sc["tpr"]) == 4
  np.testing.assert_allclose(sc["tpr"], summary["tpr"])


def test_rerun_reuses_finished_stages(run):
  c, workdir, _ = run
  files = ["analysis/adcs.npz", "analysis/dfm.npz", "analysis/shortcut.npz", "train_results.json"]
  before = {f: os.path.getmtime(workdir / f) for f in files}
  summary = pipeline.run_pipeline(c, str(workdir))
  assert summary["stage_seconds"]["train"] == 0.0
  assert {f: os.path.getmtime(workdir / f) for f in files} == before


def _launch(script, c, workdir):
  """The command line of a launcher on the fixture's run (its config as flags)."""
  return [
      sys.executable,
      str(REPO / "launch" / script),
      f"--config={REPO}/configs/synthetic.py:syn1",
      f"--workdir={workdir}",
      f"--config.data.data_dir={c.data.data_dir}",
      f"--config.data.synthetic.train_per_class={c.data.synthetic.train_per_class}",
      f"--config.data.synthetic.test_per_class={c.data.synthetic.test_per_class}",
      f"--config.model.width_multiplier={c.model.width_multiplier}",
      "--config.train.batch_size=8",
      "--config.train.eval_batch_size=16",
  ]


def test_dfm_launcher_prints_the_dfms_and_planted_overlap(run):
  c, workdir, _ = run
  args = _launch("dfm.py", c, workdir)
  env = dict(os.environ, PYTHONPATH=str(REPO))
  out = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "DFMs at 5% (paired candidates, patch 1, 32x32)" in out.stdout
  assert out.stdout.count("planted (u, v):") == 4 and out.stdout.count("recall") == 4


def test_a_damaged_dfm_is_rebuilt_from_intact_scores_without_reranking(run, monkeypatch):
  c, workdir, _ = run
  dfm_path, scores_path = workdir / "analysis" / "dfm.npz", workdir / "analysis" / "scores.npz"
  want = artifacts.load(str(dfm_path), "dfm")["dfm"]
  scores_mtime = os.path.getmtime(scores_path)
  data = dfm_path.read_bytes()
  dfm_path.write_bytes(data[: len(data) // 3])  # truncated, as by a full disk or a kill
  from freqjax.spectral import dfm as dfm_lib

  monkeypatch.setattr(dfm_lib.Engine, "rank", lambda *a, **k: pytest.fail("re-ranked"))
  # A ranking with other settings, interrupted: its partial chunks are not this stage's.
  other = workdir / "analysis" / "dfm_partial" / "0123456789abcdef"
  other.mkdir(parents=True)
  (other / "class0000_chunk000000.npy").write_bytes(b"kept")
  dfm_stage.run(c, str(workdir))
  np.testing.assert_array_equal(artifacts.load(str(dfm_path), "dfm")["dfm"], want)
  assert os.path.getmtime(scores_path) == scores_mtime
  assert (other / "class0000_chunk000000.npy").read_bytes() == b"kept"
  shutil.rmtree(workdir / "analysis" / "dfm_partial")
  # New thresholds are DFMs of the same scores, too: no ranking.
  c2 = c.copy_and_resolve_references()
  c2.analysis.thresholds = (0.05, 0.3)
  art = dfm_stage.run(c2, str(workdir))
  assert art.meta["thresholds"] == [0.05, 0.3]
  np.testing.assert_array_equal(art["dfm"][0], want[1])
  dfm_stage.run(c, str(workdir))  # back to the run's thresholds for the tests below


def test_checkpoint_of_another_model_is_refused(run):
  c, workdir, _ = run
  other = c.copy_and_resolve_references()
  other.model.width_multiplier = 0.25
  with pytest.raises(
      errors.CheckpointError,
      match=r"does not fit the configured model resnet18 \(width "
      r"0.25.*trained as resnet18 \(width 0.0625",
  ):
    context.load_context(other, str(workdir))


def test_dfmx_run_is_another_run_and_is_compared_on_the_dfms_it_mitigates(run, dfmx_run):
  c, workdir, _ = run
  d, after, _ = dfmx_run
  ident = json.loads((after / "run.json").read_text())
  assert ident["augment.dfmx"].startswith("dfms ") and ident["augment.dfmx"].endswith("p=0.5")
  # Training with DFM-X on the finished run's workdir is refused, naming the field.
  with pytest.raises(errors.WorkdirError, match=r"augment.dfmx: 'off' in the workdir"):
    pipeline.run_pipeline(d, str(workdir))
  own = artifacts.load(str(after / "analysis" / "shortcut.npz"), "shortcut")
  on_before = artifacts.load(str(after / "analysis" / "shortcut_dfms.npz"), "shortcut")
  base = artifacts.load(str(workdir / "analysis" / "dfm.npz"), "dfm")
  np.testing.assert_allclose(
      on_before["keep_fraction"], base["dfm"][1].reshape(4, -1).mean(1)
  )  # the run before's 5% DFMs
  out = subprocess.run(
      [sys.executable, str(REPO / "launch" / "compare.py"), f"--before={workdir}",
       f"--after={after}", f"--figure={after}/figures/before_after.png"],
      capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  before_sc = artifacts.load(str(workdir / "analysis" / "shortcut.npz"), "shortcut")
  assert result["on_before_dfms"]["tpr_before"] == before_sc["tpr"].tolist()
  assert result["on_before_dfms"]["tpr_after"] == on_before["tpr"].tolist()
  assert result["on_own_dfms"]["fpr_after"] == own["fpr"].tolist()
  assert "| mean |" in out.stdout and (after / "figures" / "before_after.png").exists()
  # Tested on the other run's DFMs before it has DFMs of its own: the same result.
  early = after.parent / "dfmx_no_own_dfms"
  shutil.copytree(after, early)
  for f in ("dfm.npz", "scores.npz", "shortcut.npz", "shortcut_dfms.npz"):
    (early / "analysis" / f).unlink()
  art = shortcut_stage.run(d, str(early))
  np.testing.assert_array_equal(art["confusion"], on_before["confusion"])
  assert not (early / "analysis" / "shortcut.npz").exists()


def test_notebook_runs_top_to_bottom(run, dfmx_run):
  _, workdir, _ = run
  nb = nbformat.read(REPO / "notebooks" / "analyze_dfms.ipynb", as_version=4)
  env_before = dict(os.environ)
  os.environ["FREQJAX_WORKDIR"] = str(workdir)
  os.environ["FREQJAX_COMPARE"] = str(workdir)
  os.environ["FREQJAX_AFTER"] = str(dfmx_run[1])
  try:
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()
  finally:
    os.environ.clear()
    os.environ.update(env_before)
  text = "\n".join(
      o.get("text", "") + json.dumps(o.get("data", {}))
      for cell in nb.cells
      if cell.cell_type == "code"
      for o in cell.outputs
  )
  assert "image/png" in text
  assert "planted recall" in text and "| C3 |" in text
  assert "1.00 | 1.00 | 1.00 | 1.00" in text  # the run compared with itself: IoU 1
  assert "resnet18 vs vgg11" in text
  assert "TPR before | TPR after" in text  # the before/after (DFM-X) comparison
  assert "api.analyze, DFMs at 25% of 8" in text  # the Python API on the run's model


@pytest.mark.trains
def test_learning_dynamics_study_reports_the_learning_order(tmp_path):
  c = tiny_synthetic_config(
      tmp_path / "data",
      **{"dynamics.every_steps": 4, "dynamics.until_step": 12, "data.name": "syn_small"},
  )
  result = learning_dynamics.run(c, str(tmp_path / "study"), bands=(2,), seeds=(0,))
  (run,) = result["runs"]
  assert (run["band"], run["seed"]) == (2, 0) and len(run["learned_step"]) == 4
  assert run["last_evaluated_step"] == 12 and result["total"] == 1
  saved = json.loads((tmp_path / "study" / "learning_dynamics.json").read_text())
  assert saved["runs"][0]["learned_step"] == run["learned_step"]
  table = (tmp_path / "study" / "learning_dynamics.md").read_text()
  assert "| Syn-2 | 0 |" in table and "up to step 12" in table
  assert (tmp_path / "study" / "syn2_seed0" / "figures" / "dynamics.png").exists()


def _copy(workdir, name):
  to = workdir.parent / name
  if not to.exists():
    shutil.copytree(workdir, to, ignore=shutil.ignore_patterns(".lock"))
  return to


@pytest.mark.parametrize("method", ["auto", "screened", "coarse_to_fine", "hfss"])
def test_a_fast_search_writes_the_dfm_artifacts_from_its_ranking(run, method):
  c, workdir, _ = run
  wd = _copy(workdir, f"search_{method}")
  d = c.copy_and_resolve_references()
  d.analysis.search = method
  d.analysis.hfss.num_masks, d.analysis.hfss.num_best = 30, 3
  d.analysis.hfss.patch_sizes = (8, 2)
  exhaustive = (wd / "analysis/scores.npz").read_bytes()
  dfm_stage.run(d, str(wd))
  # The exhaustive ranking stays as it was; the method's scores are beside it.
  assert (wd / "analysis/scores.npz").read_bytes() == exhaustive
  scores = artifacts.load(str(wd / f"analysis/scores_{method}.npz"), "scores")
  dfms = artifacts.load(str(wd / "analysis/dfm.npz"), "dfm")
  assert scores.meta["search"]["method"] == method
  np.testing.assert_array_equal(
      dfms["dfm"], dfm_lib.dfms(scores["dfm_key"], [float(t) for t in d.analysis.thresholds])
  )
  if method == "hfss":
    h = artifacts.load(str(wd / "analysis/hfss.npz"), "hfss")
    assert h["subsets"].shape[:2] == (4, 3) and (wd / "figures/hfss.png").exists()
    return
  assert scores.meta["forward_equivalents"] < scores.meta["exhaustive_forwards"]
  if method == "auto":
    assert len(scores.meta["missed_mass_bound_per_class"]) == 4
    assert set(scores.meta["stop_per_class"]) <= {"bound", "floor", "all scored"}
  # The 5 % DFM is made of exactly scored candidates only (auto: scored on some images).
  scored = scores["images_scored"] > 0 if method == "auto" else scores["candidate_exact"]
  exact_map = dfm_lib.score_maps(cand_lib.paired(32, 1), scored.astype(float))
  five = dfms["dfm"][list(d.analysis.thresholds).index(0.05)]
  assert (exact_map[five] == 1).all()


def test_bench_search_prints_each_method_against_the_exhaustive_ranking(run):
  c, workdir, _ = run
  wd = _copy(workdir, "bench_search")
  args = _launch("bench_search.py", c, wd) + [
      "--images_per_class=4",
      "--methods=auto,screened,coarse_to_fine",
  ]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  out = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r["exhaustive_forwards"] == 514 * 16
  for m in ("auto", "screened", "coarse_to_fine"):
    for k in ("speedup", "mass5", "iou5", "max_tpr_diff", "max_fpr_diff"):
      assert np.isfinite(r[f"{m}_{k}"]), (m, k)
    assert r[f"{m}_speedup"] > 1 and 0 <= r[f"{m}_mass5"] <= 1 + 1e-6
    for k in ("mass5", "tpr_diff", "fpr_diff"):
      assert len(r[f"{m}_{k}_per_class"]) == 4
  # auto's bound is never below the mass it actually missed (measured against exhaustive).
  missed, bound = (np.array(r[f"auto_missed_mass{k}_per_class"]) for k in ("", "_bound"))
  assert (bound >= missed - 1e-6).all()
  for k in ("mass5", "tpr_diff", "fpr_diff"):
    assert len(r[f"exhaustive_split_half_{k}_per_class"]) == 4
  bad = subprocess.run(args + ["--methods=fastest"], capture_output=True, text=True, env=env)
  assert bad.returncode == 2 and "fastest" in bad.stderr.strip().splitlines()[-1]
