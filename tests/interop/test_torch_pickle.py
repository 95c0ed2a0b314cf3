"""The torch.save reader: tensors rebuilt from storage records (strides, offsets, dtypes),
nothing in a pickle ever executed, damaged files refused with one clear error."""

import collections
import os
import pickle
import zipfile

import numpy as np
import pytest

from freqjax import errors
from freqjax.interop import torch_pickle
from tests.interop import torch_zip


def test_tensors_come_back_with_their_values_shapes_strides_and_dtypes(tmp_path):
  a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  state = collections.OrderedDict(
      w=a,
      fortran=np.asfortranarray(a[0]),  # non-C strides in the record
      ids=np.arange(5, dtype=np.int64),
      half=np.linspace(0, 1, 7).astype(np.float16),
      scalar=np.full((), 3.5, np.float32),
  )
  path = torch_zip.save(str(tmp_path / "m.pth"), {"state_dict": state, "epoch": 7})
  out = torch_pickle.load(path)
  assert out["epoch"] == 7
  for k, v in state.items():
    got = out["state_dict"][k]
    assert got.dtype == v.dtype and got.shape == v.shape, k
    np.testing.assert_array_equal(got, v)


class _Evil:
  """Would write a file when its state is restored (pickle's BUILD) or it is called."""

  def __init__(self, path):
    self.path = path

  def __setstate__(self, state):
    with open(state["path"], "w") as f:
      f.write("executed")


class _Reduce:

  def __init__(self, fn, args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return (self.fn, self.args)


@pytest.mark.parametrize(
    "fn", [os.system, eval, exec, getattr, __import__, zipfile.ZipFile], ids=lambda f: f.__name__
)
def test_a_pickle_that_calls_anything_else_is_refused_unexecuted(tmp_path, fn):
  marker = tmp_path / "pwned"
  payloads = {
      "system": (f"touch {marker}",),
      "eval": (f"open({str(marker)!r}, 'w')",),
      "exec": (f"open({str(marker)!r}, 'w')",),
      "getattr": (str(marker), "upper"),
      "__import__": ("os",),
      "ZipFile": (str(marker), "w"),
  }
  raw = pickle.dumps({"state_dict": {"x": _Reduce(fn, payloads[fn.__name__])}}, protocol=2)
  path = torch_zip.save(str(tmp_path / "evil.ckpt"), None, raw_pickle=raw)
  with pytest.raises(torch_pickle.UnsafePickleError, match="nothing was executed") as e:
    torch_pickle.load(path)
  assert fn.__name__ in str(e.value)
  assert isinstance(e.value, errors.UserError)
  assert not marker.exists()


def test_unknown_classes_become_inert_placeholders(tmp_path):
  marker = tmp_path / "pwned"
  raw = pickle.dumps({"hyper_parameters": {"model": _Evil(str(marker))}, "lr": 0.1}, protocol=2)
  path = torch_zip.save(str(tmp_path / "lightning.ckpt"), None, raw_pickle=raw)
  out = torch_pickle.load(path)
  obj = out["hyper_parameters"]["model"]
  assert isinstance(obj, torch_pickle.Placeholder) and obj.qualname.endswith("_Evil")
  assert obj.state == {"path": str(marker)}  # recorded, never given to the real class
  assert out["lr"] == 0.1 and not marker.exists()


def test_damaged_files_are_one_clear_error(tmp_path):
  good = torch_zip.save(str(tmp_path / "m.pth"), {"w": np.ones((64, 64), np.float32)})
  data = open(good, "rb").read()
  (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
  (tmp_path / "text.pth").write_text("not a checkpoint")
  for name in ("half.pth", "text.pth"):
    with pytest.raises(errors.CheckpointError, match="not a PyTorch zip checkpoint"):
      torch_pickle.load(str(tmp_path / name))
  with zipfile.ZipFile(tmp_path / "short.pth", "w") as z:  # a record shorter than its tensor
    with zipfile.ZipFile(good) as src:
      for n in src.namelist():
        z.writestr(n, src.read(n)[:100] if "/data/" in n else src.read(n))
  with pytest.raises(errors.CheckpointError, match="reaches past its storage"):
    torch_pickle.load(str(tmp_path / "short.pth"))
