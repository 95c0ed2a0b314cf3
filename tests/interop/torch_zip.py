"""A minimal `torch.save` writer for tests (PyTorch is not installed): numpy arrays are
pickled as torch tensors (`torch._utils._rebuild_tensor_v2` of a `torch.FloatStorage`
record under `data/<key>`), laid out in a zip archive as torch.save does."""

import collections
import io
import pickle
import zipfile

import numpy as np

_STORAGES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.float16): "HalfStorage",
}


class Global:
  """Pickles as the global `module.name` (what torch's own classes would pickle as)."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle requires reduce functions to be callable
    raise TypeError("a placeholder for pickling only")


class _StorageRef:

  def __init__(self, key, dtype, numel):
    self.key, self.dtype, self.numel = key, dtype, numel


class _Writer(pickle._Pickler):  # the Python pickler: it lets save_global be overridden

  def __init__(self, f, records):
    super().__init__(f, protocol=2)
    self.records = records

  def persistent_id(self, obj):
    if isinstance(obj, _StorageRef):
      return ("storage", Global("torch", _STORAGES[obj.dtype]), obj.key, "cpu", obj.numel)
    return None

  def reducer_override(self, obj):
    if isinstance(obj, np.ndarray):
      key = str(len(self.records))
      order = "F" if obj.flags.f_contiguous and not obj.flags.c_contiguous else "C"
      flat = np.asarray(obj).ravel(order=order)
      self.records[key] = flat.tobytes()
      strides = tuple(s // obj.itemsize for s in obj.strides) if order == "F" else None
      if strides is None:
        strides = tuple(s // obj.itemsize for s in np.ascontiguousarray(obj).strides)
      ref = _StorageRef(key, obj.dtype, obj.size)
      args = (ref, 0, tuple(obj.shape), strides, False, collections.OrderedDict())
      return (Global("torch._utils", "_rebuild_tensor_v2"), args)
    return NotImplemented

  def save_global(self, obj, name=None):
    if isinstance(obj, Global):
      self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
      self.memoize(obj)
      return
    super().save_global(obj, name)

  def save(self, obj, save_persistent_id=True):
    if isinstance(obj, Global):
      return self.save_global(obj)
    return super().save(obj, save_persistent_id)


def save(path, obj, name="archive", raw_pickle: bytes | None = None):
  """Writes `obj` as torch.save would (or `raw_pickle` as its data.pkl)."""
  records = {}
  if raw_pickle is None:
    buf = io.BytesIO()
    _Writer(buf, records).dump(obj)
    raw_pickle = buf.getvalue()
  with zipfile.ZipFile(path, "w") as z:
    z.writestr(f"{name}/data.pkl", raw_pickle)
    z.writestr(f"{name}/byteorder", "little")
    for key, raw in records.items():
      z.writestr(f"{name}/data/{key}", raw)
    z.writestr(f"{name}/version", "3\n")
  return path
