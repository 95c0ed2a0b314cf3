"""The safetensors reader and writer without the safetensors package."""

import numpy as np
import pytest

from freqjax import errors
from freqjax.interop import safetensors_io


def test_round_trip_keeps_names_dtypes_and_values(tmp_path):
  tensors = {
      "a.weight": np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32),
      "b": np.arange(4, dtype=np.int64),
      "c": np.ones((), np.float16),
  }
  path = safetensors_io.save(str(tmp_path / "m.safetensors"), tensors, {"k": "v"})
  assert safetensors_io.looks_like_safetensors(path)
  out, meta = safetensors_io.load(path)
  assert meta == {"k": "v"} and set(out) == set(tensors)
  for k, v in tensors.items():
    assert out[k].dtype == v.dtype and out[k].shape == v.shape
    np.testing.assert_array_equal(out[k], v)


def test_the_real_timm_file_reads(shared_data):
  out, _ = safetensors_io.load(
      str(shared_data / "torch-checkpoints" / "timm_vit_tiny_patch16_224_c10.safetensors")
  )
  assert out["pos_embed"].shape == (1, 197, 192) and out["head.weight"].shape == (10, 192)


def test_a_truncated_file_names_the_tensor(tmp_path):
  path = safetensors_io.save(
      str(tmp_path / "m.safetensors"), {"w": np.ones((100, 100), np.float32)}
  )
  data = open(path, "rb").read()
  (tmp_path / "cut.safetensors").write_bytes(data[:-10])
  with pytest.raises(errors.CheckpointError, match="tensor 'w'.*truncated"):
    safetensors_io.load(str(tmp_path / "cut.safetensors"))
