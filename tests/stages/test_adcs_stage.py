"""launch/adcs.py needs no model: on a dataset alone, in the authors' class order (sorted
folder names, as ImageFolder), it equals a transcription of their compute_ADCS.py."""

import json

import numpy as np
from PIL import Image

from freqjax import artifacts, config as config_lib
from tests.conftest import REPO
from tests.spectral.test_adcs import _official_numpy
from tests.training.helpers import launch


def test_adcs_from_the_dataset_alone_in_the_authors_class_order(shared_data, tmp_path):
  workdir = tmp_path / "adcs_only"
  out = launch(
      "adcs",
      [
          f"--config={REPO}/configs/tiny_imagenet10.py",
          f"--workdir={workdir}",
          f"--config.data.data_dir={tmp_path / 'data'}",
          "--config.analysis.adcs=official",
          "--config.analysis.adcs_class_order=sorted",
      ],
      devices=2,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ADCS: 100%" in out.stderr  # its progress bar
  assert not (workdir / "checkpoints").exists() and not (workdir / "run.json").exists()
  art = artifacts.load(str(workdir / "analysis" / "adcs.npz"), "adcs")
  # ImageFolder's order: sorted folder names; the config lists ImageNet-10's order.
  root = shared_data / "tiny-imagenet-10" / "val"
  folders = sorted(p.name for p in root.iterdir())
  c = json.loads(json.dumps(art.meta["config"]))
  by_wnid = dict(zip(c["data"]["class_folders"], c["data"]["class_names"]))
  assert art.meta["classes"] == [by_wnid[f.split("_")[0]] for f in folders]
  assert art.meta["classes"] != c["data"]["class_names"]  # the order really changed
  imgs, labels = [], []
  for k, f in enumerate(folders):
    for p in sorted((root / f).iterdir()):
      imgs.append(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0)
      labels.append(k)
  mean, std = np.array(config_lib.IMAGENET10_MEAN), np.array(config_lib.IMAGENET10_STD)
  x = ((np.stack(imgs) - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)
  want, _ = _official_numpy(x, np.array(labels), len(folders))
  np.testing.assert_array_equal(art["adcs"], want)
  assert (workdir / "figures" / "adcs.png").exists()


def test_adcs_of_another_config_never_replaces_a_run_s_analysis(shared_data, tmp_path):
  from freqjax import workdir as workdir_lib
  from tests.conftest import load_config

  workdir = tmp_path / "syn1_run"
  wd = workdir_lib.Workdir(str(workdir))
  wd.claim(workdir_lib.identity(load_config("configs/synthetic.py:syn1"), None))
  (workdir / "analysis").mkdir()
  (workdir / "analysis" / "adcs.npz").write_bytes(b"the run's own ADCS")
  out = launch(
      "adcs",
      [
          f"--config={REPO}/configs/tiny_imagenet10.py",
          f"--workdir={workdir}",
          f"--config.data.data_dir={tmp_path / 'data'}",
      ],
      devices=1,
  )
  assert out.returncode == 2, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert "holds a run trained with other settings" in last and "class_names" in last, last
  assert (workdir / "analysis" / "adcs.npz").read_bytes() == b"the run's own ADCS"
  assert not (workdir / "figures").exists()
