"""PyTorch `torch.save` zip checkpoints read without PyTorch, by an unpickler that runs nothing.

A `torch.save` file (PyTorch >= 1.6) is a zip archive `<prefix>/data.pkl` (the pickled object)
beside `<prefix>/data/<key>` (the raw bytes of each tensor storage) and `<prefix>/byteorder`.
The pickle names tensors as calls of `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)` whose storage is a persistent id `('storage', <dtype>Storage, key, device,
numel)`; this module rebuilds them as NumPy arrays from the storage records itself.

Safety: the unpickler resolves no global to real code except a short list of pure
functions written here (tensor and parameter rebuilders, OrderedDict, set). Any other class
(e.g. the model object Lightning pickles into `hyper_parameters`) becomes an inert
`Placeholder` that may only be created without running code (pickle's NEWOBJ + BUILD, which
just record their arguments); *calling* any other global (pickle's REDUCE, the way a pickle
runs `os.system`, `eval`, `subprocess.Popen`, ...) is refused with `UnsafePickleError`
before it happens. Only tensors are used from what is loaded.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from freqjax import errors

# torch.<Name>Storage -> element dtype.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# torch.<dtype> (UntypedStorage pickles name the dtype instead of a typed storage class).
_TORCH_DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}


class UnsafePickleError(errors.CheckpointError):
  """The pickle asked to call something that is not on the allowed list; nothing ran."""


class Placeholder:
  """An object of a class the unpickler does not load (a module, a config object): it only
  records the arguments and state the pickle gave it, and runs none of the class's code."""

  qualname = "?"

  def __new__(cls, *args, **kwargs):
    obj = object.__new__(cls)
    obj.args, obj.state = args, None
    return obj

  def __setstate__(self, state):
    self.state = state

  def __repr__(self) -> str:
    return f"<placeholder for {self.qualname}>"


class _RefuseCalls(type):
  """Metaclass of placeholder classes: calling one (pickle's REDUCE) is refused."""

  def __call__(cls, *args, **kwargs):
    raise UnsafePickleError(
        f"The checkpoint's pickle tries to call {cls.qualname}, which is not a tensor or a "
        "plain container: a pickle that runs code is refused, and nothing was executed. "
        "Re-save the model's state_dict (torch.save(model.state_dict(), path)) or as "
        ".safetensors."
    )


def _placeholder_class(module: str, name: str) -> type:
  qualname = f"{module}.{name}"
  return _RefuseCalls(name, (Placeholder,), {"qualname": qualname, "__module__": "placeholder"})


class _StorageType:
  """What `torch.FloatStorage` etc. resolve to: only their element dtype is used."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


class _Storage:

  def __init__(self, data: np.ndarray):
    self.data = data  # flat array of the storage's elements


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2, with NumPy: a strided view of the storage, copied."""
  if not isinstance(storage, _Storage):
    raise UnsafePickleError("A tensor in the checkpoint has no storage record; not a tensor.")
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  flat, offset = storage.data, int(storage_offset)
  if not size:
    return flat[offset : offset + 1].reshape(()).copy()
  extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
  if min(size) > 0 and (offset < 0 or extent > flat.size or min(stride) < 0):
    raise errors.CheckpointError(
        f"A tensor of shape {size} reaches past its storage of {flat.size} elements: the "
        "checkpoint is damaged."
    )
  if min(size) == 0:
    return np.zeros(size, flat.dtype)
  item = flat.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
      flat[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
  )
  return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
  return data


def _ordered_dict(*args):
  return collections.OrderedDict(*args)


def _set(*args):
  return set(*args)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _set,
    ("__builtin__", "set"): _set,
    ("builtins", "frozenset"): frozenset,
}


class _Unpickler(pickle.Unpickler):

  def __init__(self, data: bytes, read_record, byteorder: str):
    super().__init__(io.BytesIO(data))
    self._read_record = read_record
    self._byteorder = byteorder
    self._storages: dict[str, _Storage] = {}

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    if module == "torch" and name in _TORCH_DTYPES:
      return _StorageType(_TORCH_DTYPES[name])
    return _placeholder_class(module, name)

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
      raise errors.CheckpointError(f"Unknown persistent record {pid!r} in the checkpoint.")
    storage_type, key = pid[1], str(pid[2])
    if not isinstance(storage_type, _StorageType):
      raise errors.CheckpointError(
          f"Storage record {key} has an unsupported element type ({storage_type!r})."
      )
    if key not in self._storages:
      raw = self._read_record(key)
      dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
      if len(raw) % dtype.itemsize:
        raise errors.CheckpointError(
            f"Storage record data/{key} has {len(raw)} bytes, not a whole number of "
            f"{dtype.name} elements: the checkpoint is damaged."
        )
      data = np.frombuffer(raw, dtype)
      self._storages[key] = _Storage(data.astype(data.dtype.newbyteorder("=")))
    return self._storages[key]


def is_torch_zip(path: str) -> bool:
  return zipfile.is_zipfile(path)


def load(path: str) -> Any:
  """The object `torch.save` wrote to `path`, tensors as NumPy arrays, other classes as
  `Placeholder`s. CheckpointError for a file that is not a complete torch zip checkpoint."""
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as e:
    raise errors.CheckpointError(
        f"{path} is not a PyTorch zip checkpoint ({e}); a .pt/.pth/.ckpt written by "
        "torch.save (PyTorch >= 1.6) or a .safetensors file is expected. If it is an old "
        "(pre-1.6) torch file, re-save it with a recent PyTorch."
    ) from e
  with archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pickles:
      raise errors.CheckpointError(
          f"{path} is a zip file but not a torch.save checkpoint (no <name>/data.pkl inside)."
      )
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in names:
      byteorder = archive.read(f"{prefix}byteorder").decode().strip()

    def read_record(key: str) -> bytes:
      try:
        return archive.read(f"{prefix}data/{key}")
      except KeyError as e:
        raise errors.CheckpointError(
            f"{path} lacks the tensor record {prefix}data/{key}: the file is incomplete."
        ) from e

    try:
      return _Unpickler(archive.read(pickles[0]), read_record, byteorder).load()
    except errors.UserError:
      raise
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, OSError, ValueError) as e:
      raise errors.CheckpointError(
          f"{path} cannot be read as a checkpoint ({type(e).__name__}: {e}); the file is "
          "damaged or truncated."
      ) from e
