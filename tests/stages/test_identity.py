"""Every model-using launch checks the run's identity as training does: a folder run whose
train images changed (so its dataset and recomputed mean/std differ), or another seed, is
refused with one line naming the ways out; the same images copied elsewhere (new paths and
mtimes) are the same dataset; --config.analysis.data=config analyses other data on purpose
and the artifacts record it."""

import shutil

import numpy as np
import pytest
from PIL import Image

from freqjax import artifacts, errors
from freqjax.stages import context, dfm as dfm_stage
from freqjax.training import loop
from tests.conftest import REPO, load_config
from tests.training.helpers import last_line, launch

CLASSES = ("ant", "bee", "cat")


def _folder(root):
  rng = np.random.default_rng(0)
  for split, n in (("train", 8), ("test", 2)):
    for c in CLASSES:
      d = root / split / c
      d.mkdir(parents=True)
      for k in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / f"{k}.png")
  return root


def _config(root, data_dir, **overrides):
  c = load_config(f"configs/folder.py:root={root},size=16")
  c.data.data_dir = str(data_dir)
  c.model.width_multiplier = 1 / 16
  c.train.batch_size, c.train.eval_batch_size, c.train.epochs = 4, 6, 1
  c.train.progress, c.train.prefetch, c.train.num_devices = False, 0, 1
  c.analysis.patch_size = 8
  for k, v in overrides.items():
    node, *path = c, *k.split(".")
    for p in path[:-1]:
      node = node[p]
    node[path[-1]] = v
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("identity")
  root = _folder(tmp / "mine")
  workdir = tmp / "run"
  loop.train_and_evaluate(_config(root, tmp / "data"), str(workdir))
  return tmp, root, workdir


def test_the_run_s_own_config_is_analysed(run):
  tmp, root, workdir = run
  ctx = context.load_context(_config(root, tmp / "data"), str(workdir))
  assert ctx.data_differs == {} and "analysis_data" not in ctx.meta()


def test_the_same_images_copied_elsewhere_are_the_same_dataset(run):
  tmp, root, workdir = run
  copy = tmp / "copy_of_mine"
  shutil.copytree(root, copy, copy_function=shutil.copy)  # new paths and mtimes
  ctx = context.load_context(_config(copy, tmp / "data"), str(workdir))
  assert ctx.data_differs == {}


def test_another_seed_is_refused(run):
  tmp, root, workdir = run
  with pytest.raises(errors.WorkdirError, match=r"seed: 0 in the run, 5 now"):
    context.load_context(_config(root, tmp / "data", seed=5), str(workdir))


def test_a_replaced_train_image_is_refused_by_the_launchers_and_allowed_on_purpose(run):
  tmp, root, workdir = run
  changed = tmp / "changed"
  shutil.copytree(root, changed)
  img = np.asarray(Image.open(changed / "train" / "bee" / "3.png"))
  Image.fromarray(255 - img).save(changed / "train" / "bee" / "3.png")
  args = [
      f"--config={REPO}/configs/folder.py:root={changed},size=16",
      f"--workdir={workdir}",
      f"--config.data.data_dir={tmp / 'data'}",
      "--config.model.width_multiplier=0.0625",
      "--config.analysis.patch_size=8",
  ]
  for launcher in ("dfm", "shortcut_test"):
    out = launch(launcher, args)
    assert out.returncode == 2, out.stderr[-3000:]
    line = last_line(out)
    assert "holds a run trained with other settings (dataset:" in line and "normalisation" in line
    assert "--config.analysis.data=config" in line and "Traceback" not in out.stderr
  assert not (workdir / "analysis").exists()  # nothing was analysed

  c = _config(changed, tmp / "data", **{"analysis.data": "config"})
  ctx = context.load_context(c, str(workdir))
  assert set(ctx.data_differs) == {"dataset", "normalisation"}
  assert ctx.meta()["analysis_data"]["differs_from_run"] == ctx.data_differs
  own = context.load_context(_config(root, tmp / "data"), str(workdir))
  assert ctx.fingerprint("dfm") != own.fingerprint("dfm")  # never reuses the run's artifacts
  dfm_stage.run(c, str(workdir), ctx)  # its artifacts go beside the run's, never over them
  (view,) = (workdir / "analysis").iterdir()
  assert view.name.startswith("other-data-") and (view / "scores.npz").exists()
  recorded, now = artifacts.load(str(view / "dfm.npz"), "dfm").meta["analysis_data"][
      "differs_from_run"
  ]["dataset"]
  assert recorded.startswith("freqjax_folder/content-") and recorded != now
