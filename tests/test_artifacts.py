"""The artifact format: round trips, atomic writes, header checks; the authors' pickles."""

import os
import pickle

import numpy as np
import pytest

from freqjax import artifacts

OFFICIAL_COUNTS = {0: 459, 1: 561, 2: 368, 3: 395, 4: 112, 5: 410, 6: 158, 7: 468, 8: 202, 9: 413}


def test_round_trip_and_header(tmp_path):
  path = str(tmp_path / "a" / "dfm.npz")
  dfm = np.random.default_rng(0).random((2, 3, 8, 8)) > 0.5
  artifacts.save(
      path,
      "dfm",
      {"dfm": dfm},
      {"thresholds": (0.05, 0.1), "classes": ["a", "b", "c"], "score": np.float32(1.5)},
  )
  art = artifacts.load(path, "dfm")
  np.testing.assert_array_equal(art["dfm"], dfm)
  assert art.meta["format"] == "freqjax-artifact" and art.meta["version"] == 1
  assert art.meta["thresholds"] == [0.05, 0.1] and art.meta["score"] == 1.5
  with pytest.raises(artifacts.ArtifactError, match="holds a 'dfm' artifact, expected 'adcs'"):
    artifacts.load(path, "adcs")
  assert artifacts.exists(path, "dfm") and not artifacts.exists(path, "adcs")
  assert os.listdir(tmp_path / "a") == ["dfm.npz"]  # no temporary files left behind


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path):
  path = str(tmp_path / "scores.npz")
  artifacts.save(path, "scores", {"scores": np.ones((1, 4, 4))})

  class Boom:

    def __array__(self, *a, **k):
      raise RuntimeError("disk full")

  with pytest.raises(RuntimeError):
    artifacts.save(path, "scores", {"scores": np.zeros((1, 4, 4)), "bad": Boom()})
  np.testing.assert_array_equal(artifacts.load(path, "scores")["scores"], np.ones((1, 4, 4)))
  assert os.listdir(tmp_path) == ["scores.npz"]


def test_truncated_or_foreign_files_are_not_artifacts(tmp_path):
  path = str(tmp_path / "x.npz")
  artifacts.save(path, "adcs", {"adcs": np.zeros((2, 4, 4), np.int32)})
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])
  assert not artifacts.exists(path)
  with pytest.raises(artifacts.ArtifactError, match="not a readable freqjax artifact"):
    artifacts.load(path)
  np.savez(str(tmp_path / "plain.npz"), a=np.zeros(3))
  with pytest.raises(artifacts.ArtifactError, match="no __meta__"):
    artifacts.load(str(tmp_path / "plain.npz"))
  with pytest.raises(ValueError, match="Unknown artifact kind"):
    artifacts.save(path, "model", {})


def test_official_pickles_import_and_export(shared_data, tmp_path):
  root = shared_data / "official-dfms" / "dfmx-cifar10"
  for name in ("resnet18", "resnet34", "resnet50", "vgg11"):
    dfms = artifacts.import_official_dfms(str(root / f"{name}.pkl"))
    assert dfms.shape == (10, 32, 32) and dfms.dtype == bool
  dfms = artifacts.import_official_dfms(str(root / "resnet18.pkl"))
  assert {k: int(m.sum()) for k, m in enumerate(dfms)} == OFFICIAL_COUNTS
  out = str(tmp_path / "export.pkl")
  artifacts.export_official_dfms(out, dfms)
  with open(out, "rb") as f:
    raw = pickle.load(f)
  assert sorted(raw) == list(range(10)) and raw[0].dtype == np.float64
  np.testing.assert_array_equal(artifacts.import_official_dfms(out), dfms)
  order = artifacts.safe_unpickle(open(root / "removal_order.pkl", "rb").read())
  assert order.shape == (32, 32)


class _Evil:

  def __reduce__(self):
    return (os.system, ("touch should_not_exist",))


def test_pickles_with_code_are_refused_not_executed(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  bad = tmp_path / "evil.pkl"
  bad.write_bytes(pickle.dumps({0: _Evil()}))
  with pytest.raises(artifacts.UnsafePickleError, match="Refused to load"):
    artifacts.import_official_dfms(str(bad))
  assert not (tmp_path / "should_not_exist").exists()
  strings = tmp_path / "strings.pkl"
  strings.write_bytes(pickle.dumps({0: "a string"}))
  with pytest.raises(artifacts.UnsafePickleError, match="not an array, dict or number"):
    artifacts.import_official_dfms(str(strings))
  scores = tmp_path / "scores.pkl"
  scores.write_bytes(pickle.dumps({0: np.full((4, 4), 0.3)}))
  with pytest.raises(ValueError, match="only 0 and 1"):
    artifacts.import_official_dfms(str(scores))


def test_written_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    artifacts.write_text(str(tmp_path / "a.txt"), "x")
    artifacts.save(str(tmp_path / "dfm.npz"), "dfm", {"dfm": np.zeros((1, 1, 2, 2), bool)})
    os.umask(0o002)
    artifacts.write_json(str(tmp_path / "b.json"), {"a": 1})
  finally:
    os.umask(old)
  assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o644
  assert os.stat(tmp_path / "dfm.npz").st_mode & 0o777 == 0o644
  assert os.stat(tmp_path / "b.json").st_mode & 0o777 == 0o664


def test_an_unreadable_artifact_names_the_launcher_that_regenerates_it(tmp_path):
  path = tmp_path / "dfm.npz"
  artifacts.save(str(path), "dfm", {"dfm": np.zeros((1, 2, 8, 8), bool)})
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(
      artifacts.ArtifactError,
      match=r"truncated or damaged.*Regenerate it with python launch/dfm.py",
  ):
    artifacts.load(str(path), "dfm")
  with pytest.raises(artifacts.ArtifactError, match=r"No adcs artifact.*launch/adcs.py"):
    artifacts.load(str(tmp_path / "adcs.npz"), "adcs")
