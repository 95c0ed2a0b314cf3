"""Folder datasets laid out as `<root>/<split>/<class folder>/<image>` (ImageNet-10, its
stylized copy, ImageNet-SCT or any OOD set of the same classes).

Scanning and decoding only (no TensorFlow): PIL decodes every image, converts grayscale,
RGBA, palette and CMYK images to RGB, scales high-bit-depth and float images to 8 bits (see
`to_8bit`) and resizes it. Unreadable or truncated files are skipped with a warning and
reported to the caller, who records them in the dataset's metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import stat
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from absl import logging
from PIL import Image

from freqjax import errors

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
LAYOUT = "<root>/<split>/<class folder>/<image>"


class FolderDatasetError(errors.DatasetError):
  """A folder dataset is not laid out as expected; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One image file: its path, class index and `os.stat` size/mtime at scan time."""

  path: str
  label: int
  size: int = 0
  mtime_ns: int = 0


@dataclasses.dataclass(frozen=True)
class SplitScan:
  """What `scan` found in one split folder."""

  split_dir: pathlib.Path
  entries: list[Entry]
  unlisted_folders: list[str]  # class folders that no configured class matches

  def digest(self) -> str:
    """A hash of every file's (relative path, label, size, mtime_ns), sorted by path.

    Adding, removing, renaming, replacing or touching an image changes it; the contents
    are not read, so it costs one `os.stat` per file (done by `scan`).
    """
    prefix = len(str(self.split_dir)) + 1  # entries are `<split_dir>/<class folder>/...`
    rows = sorted(
        (e.path[prefix:].replace(os.sep, "/"), e.label, e.size, e.mtime_ns) for e in self.entries
    )
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:16]


def _norm(name: str) -> str:
  return name.lower().replace("_", " ").replace("-", " ").strip()


def _matches(folder_name: str, key: str) -> bool:
  if folder_name == key or folder_name.startswith(f"{key}_") or _norm(folder_name) == _norm(key):
    return True
  head, _, tail = folder_name.partition("_")
  return bool(tail) and head[:1] == "n" and head[1:].isdigit() and _norm(tail) == _norm(key)


def match_class_folders(
    split_dir: pathlib.Path, classes: Sequence[str], alt_names: Sequence[str] = ()
) -> list[pathlib.Path]:
  """The folder of each class, in class-index order.

  A class key matches a folder named exactly as the key, `<key>_<anything>` or
  `<WNID>_<key>` (Tiny ImageNet's `n02123045_tabby_cat` matches 'n02123045' and 'tabby cat'),
  or the key with spaces/underscores/case ignored. `classes` holds WNIDs or names;
  `alt_names` optional names for the same classes.
  """
  folders = sorted(p for p in split_dir.iterdir() if p.is_dir())
  found = []
  for i, key in enumerate(classes):
    keys = [key] + ([alt_names[i]] if i < len(alt_names) else [])
    hits = [f for f in folders if any(_matches(f.name, k) for k in keys)]
    if not hits:
      raise FolderDatasetError(
          f"Class {key!r} has no folder in {split_dir}. Folders found: "
          f"{', '.join(f.name for f in folders) or '(none)'}. Name the class folder by its "
          "WNID or class name, or fix config.data.class_folders."
      )
    if len(hits) > 1:
      raise FolderDatasetError(
          f"Class {key!r} matches several folders in {split_dir}: "
          f"{', '.join(h.name for h in hits)}; make config.data.class_folders unambiguous."
      )
    found.append(hits[0])
  return found


def _image_files(folder: pathlib.Path) -> list[tuple[pathlib.Path, os.stat_result]]:
  """Regular image files under `folder` (recursively, symlinks followed), sorted, with stats."""
  out = []
  for p in folder.rglob("*"):
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
      continue
    try:
      st = p.stat()
    except OSError:  # a dangling link or a file removed while scanning
      continue
    if stat.S_ISREG(st.st_mode):
      out.append((p, st))
  return sorted(out, key=lambda f: f[0].parts)


def scan(
    root: str | os.PathLike, split: str, classes: Sequence[str], alt_names: Sequence[str] = ()
) -> SplitScan:
  """Lists every image file of a split (sorted by class, then path) with its stat info,
  and the class folders no configured class matches (hidden `.folders` are not counted)."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FolderDatasetError(
        f"Dataset folder {root} does not exist. Expected the layout {LAYOUT}, e.g. "
        f"{root}/{split}/n02690373/xxx.JPEG; set config.data.manual_dir to its root."
    )
  split_dir = root / split
  if not split_dir.is_dir():
    present = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise FolderDatasetError(
        f"Split folder {split_dir} does not exist (found: {', '.join(present) or 'nothing'}). "
        f"Expected the layout {LAYOUT}; set config.data.train_split / test_split."
    )
  matched = match_class_folders(split_dir, classes, alt_names)
  entries = []
  for label, folder in enumerate(matched):
    files = _image_files(folder)
    if not files:
      raise FolderDatasetError(
          f"Class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); every "
          "class needs at least one image in every split."
      )
    entries.extend(Entry(str(p), label, st.st_size, st.st_mtime_ns) for p, st in files)
  names = {f.name for f in matched}
  unlisted = sorted(
      p.name
      for p in split_dir.iterdir()
      if p.is_dir() and p.name not in names and not p.name.startswith(".")
  )
  return SplitScan(split_dir, entries, unlisted)


def scan_split(
    root: str | os.PathLike, split: str, classes: Sequence[str], alt_names: Sequence[str] = ()
) -> list[Entry]:
  """Lists (path, label, size, mtime_ns) for every image file of a split, sorted by class
  then file name."""
  return scan(root, split, classes, alt_names).entries


def _listing(names: Sequence[str], limit: int = 10) -> str:
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def check_unlisted(scans: Mapping[str, SplitScan], policy: str = "warn") -> None:
  """Warns about (policy 'warn') or rejects (policy 'error'; checked by
  config.check_folder_options) class folders that no configured class matches, in any split
  of `scans` (split name -> `SplitScan`)."""
  found = {k: s for k, s in scans.items() if s.unlisted_folders}
  if not found:
    return
  where = "; ".join(
      f"split {k!r} ({s.split_dir}): {_listing(s.unlisted_folders)}" for k, s in found.items()
  )
  if policy == "error":
    raise FolderDatasetError(
        f"Class folders that no configured class matches: {where}. Add them to "
        "config.data.class_folders (and class_names), or set "
        "config.data.unlisted_classes='warn' to ignore them."
    )
  logging.warning(
      "Ignoring class folders that no configured class matches: %s. They are listed in the "
      "prepared dataset's metadata.json (unlisted_class_folders); add them to "
      "config.data.class_folders or set config.data.unlisted_classes='error' to make this "
      "an error.",
      where,
  )


def _minmax(a: np.ndarray) -> np.ndarray:
  lo, hi = float(a.min()), float(a.max())
  return np.zeros_like(a) if hi <= lo else (a - lo) * (255.0 / (hi - lo))


def to_8bit(img: Image.Image) -> Image.Image:
  """Scales a high-bit-depth or float single-channel image to an 8-bit 'L' image.

  PIL's own `convert` clips these modes to 0..255, which turns most of a 16-bit image
  white. The rule, per decoded image:

  - 'I;16', 'I;16B', 'I;16L', ... (16-bit integers) and 'I' (32-bit integers) whose values
    all lie in 0..65535 are 16-bit data: v / 257, rounded (65535 -> 255, 32896 -> 128,
    and v·257 -> v, so an 8-bit image saved as 16 bits decodes to itself).
  - 'I' / 'I;16S' images with values outside 0..65535 are min-max scaled to 0..255.
  - 'F' (float) images whose values all lie in [0, 1] are scaled by 255, rounded; any other
    float image is min-max scaled to 0..255. Non-finite values (NaN, ±inf) count as 0.
  - A constant image that needs min-max scaling becomes 0.

  Any other mode is returned unchanged. (PIL itself reduces 16-bit RGB/RGBA PNGs to 8 bits
  per channel, keeping each sample's high byte, and opens them as 'RGB'/'RGBA'.)
  """
  mode = img.mode
  if mode == "F":
    a = np.asarray(img, dtype=np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    out = a * 255.0 if a.min() >= 0.0 and a.max() <= 1.0 else _minmax(a)
  elif mode == "I" or mode.startswith("I;"):
    a = np.asarray(img).astype(np.float64)
    out = a / 257.0 if a.min() >= 0 and a.max() <= 65535 else _minmax(a)
  else:
    return img
  return Image.fromarray(np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8), "L")


class Decoded(NamedTuple):
  """`load_rgb`'s result: image is None (and reason set) when the file can't be read."""

  image: np.ndarray | None  # uint8 (size, size, 3)
  mode: str | None  # the file's PIL mode
  source_size: tuple[int, int] | None  # (width, height) as stored in the file
  reason: str | None


def load_rgb(path: str, size: int) -> Decoded:
  """Decodes one image to uint8 (size, size, 3) RGB.

  Any mode (L, LA, RGBA, P, CMYK, I;16, F, ...) is converted to RGB; high-bit-depth and
  float images are scaled to 8 bits first (`to_8bit`), not clipped. Resizing squashes to
  size×size with PIL's bilinear filter, as torchvision's `Resize((size, size))` does on PIL
  images in the official evaluation transform. Unreadable files give image None and the
  reason, with a warning.
  """
  try:
    with Image.open(path) as img:
      img.load()  # forces the full decode: truncated files fail here
      mode, source_size = img.mode, tuple(img.size)
      if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
      rgb = to_8bit(img).convert("RGB")
      if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
      return Decoded(np.asarray(rgb, dtype=np.uint8), mode, source_size, None)
  except Exception as e:  # PIL raises many types for bad files
    reason = f"{type(e).__name__}: {e}"
    logging.warning("Skipping unreadable image %s (%s)", path, reason)
    return Decoded(None, None, None, reason)


def discover_classes(root: str | os.PathLike, split: str) -> list[str]:
  """The class folders of `<root>/<split>` in sorted order (torchvision's ImageFolder order);
  DatasetError when there are none, or when some hold no image (naming them)."""
  split_dir = pathlib.Path(root) / split
  if not split_dir.is_dir():
    raise errors.DatasetError(
        f"{split_dir} does not exist; a folder dataset is laid out as "
        "<root>/<split>/<class folder>/<image> (e.g. train/cat/1.jpg, test/cat/2.jpg)."
    )
  classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and p.name[0] != ".")
  if not classes:
    raise errors.DatasetError(
        f"{split_dir} has no class folders; put each class's images in "
        f"{split_dir}/<class name>/."
    )
  empty = [c for c in classes if not _image_files(split_dir / c)]
  if empty:
    raise errors.DatasetError(
        f"Class folder(s) with no images in {split_dir}: {', '.join(empty)} (images are files "
        f"ending in {', '.join(sorted(IMAGE_EXTENSIONS))}). Add images or remove the folders."
    )
  return classes


_STATS_CACHE: dict = {}


def channel_stats(
    root: str | os.PathLike, split: str, classes: Sequence[str], size: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std in [0, 1] of the split's images resized to size×size as they
  are stored (torchvision's transforms.Normalize statistics, computed in float64)."""
  key = (os.path.abspath(root), split, tuple(classes), int(size))
  if key not in _STATS_CACHE:
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for c in classes:
      for path, _ in _image_files(pathlib.Path(root) / split / c):
        img = load_rgb(str(path), size).image
        if img is None:
          continue
        x = img.reshape(-1, 3).astype(np.float64) / 255.0
        total, total_sq, count = total + x.sum(0), total_sq + (x**2).sum(0), count + len(x)
    if not count:
      raise errors.DatasetError(f"No readable images in {pathlib.Path(root) / split}.")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    _STATS_CACHE[key] = (
        tuple(round(float(m), 6) for m in mean),
        tuple(round(float(s), 6) for s in std),
    )
  return _STATS_CACHE[key]
