"""`.safetensors` files read (and written) with NumPy alone.

Layout: an 8-byte little-endian header length n, n bytes of UTF-8 JSON
`{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the tensors' little-endian bytes, offsets relative to the end of the header. The format
holds no code; this reader still checks every offset against the file's size.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from freqjax import artifacts, errors

DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 2**20


def looks_like_safetensors(path: str) -> bool:
  """True when the file starts with a plausible header length followed by '{'."""
  try:
    with open(path, "rb") as f:
      head = f.read(9)
  except OSError:
    return False
  if len(head) < 9:
    return False
  (n,) = struct.unpack("<Q", head[:8])
  return 0 < n <= _MAX_HEADER and head[8:9] == b"{"


def load(path: str) -> tuple[dict[str, np.ndarray], dict]:
  """({name: array}, metadata) of a safetensors file; CheckpointError if it is damaged."""

  def bad(why: str):
    return errors.CheckpointError(f"{path} is not a readable .safetensors file: {why}.")

  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise bad("shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", head)
    if n > min(_MAX_HEADER, size - 8):
      raise bad(f"its header claims {n} bytes, the file has {size}")
    try:
      header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise bad(f"its header is not JSON ({e})") from e
    body = f.read()
  if not isinstance(header, dict):
    raise bad("its header is not a JSON object")
  meta = header.pop("__metadata__", None) or {}
  out = {}
  for name, info in header.items():
    try:
      dtype = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
      shape = tuple(int(s) for s in info["shape"])
      begin, end = (int(x) for x in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as e:
      raise bad(f"tensor {name!r} has an unsupported or malformed entry {info!r}") from e
    count = int(np.prod(shape, dtype=np.int64))
    if not 0 <= begin <= end <= len(body) or end - begin != count * dtype.itemsize:
      raise bad(
          f"tensor {name!r} ({info['dtype']} {list(shape)}) spans bytes {begin}..{end} of "
          f"{len(body)}: the file is truncated or damaged"
      )
    arr = np.frombuffer(body[begin:end], dtype).reshape(shape)
    out[name] = arr.astype(arr.dtype.newbyteorder("="))
  return out, meta


def save(path: str, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> str:
  """Writes `tensors` as a .safetensors file (atomically)."""
  header, chunks, offset = {}, [], 0
  for name in sorted(tensors):
    a = np.asarray(tensors[name], order="C")
    raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
    header[name] = {
        "dtype": _NAMES[a.dtype.newbyteorder("=")],
        "shape": list(a.shape),
        "data_offsets": [offset, offset + len(raw)],
    }
    chunks.append(raw)
    offset += len(raw)
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  return artifacts.write_bytes(path, struct.pack("<Q", len(blob)) + blob + b"".join(chunks))
