"""Folder datasets laid out as `<root>/<split>/<class folder>/<image>` (ImageNet-10, its
stylized copy, ImageNet-SCT or any OOD set of the same classes).

Scanning and decoding only (no TensorFlow): PIL decodes every image, converts grayscale,
RGBA, palette and CMYK images to RGB, and resizes it. Unreadable or truncated files are
skipped with a warning and reported to the caller, who records them in the dataset's
metadata.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Sequence

import numpy as np
from absl import logging
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
LAYOUT = "<root>/<split>/<class folder>/<image>"


class FolderDatasetError(ValueError):
  """A folder dataset is not laid out as expected; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Entry:
  path: str
  label: int


def _norm(name: str) -> str:
  return name.lower().replace("_", " ").replace("-", " ").strip()


def _matches(folder_name: str, key: str) -> bool:
  if folder_name == key or folder_name.startswith(f"{key}_") or _norm(folder_name) == _norm(key):
    return True
  head, _, tail = folder_name.partition("_")
  return bool(tail) and head[:1] == "n" and head[1:].isdigit() and _norm(tail) == _norm(key)


def match_class_folders(split_dir: pathlib.Path, classes: Sequence[str],
                        alt_names: Sequence[str] = ()) -> list[pathlib.Path]:
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
          "WNID or class name, or fix config.data.class_folders.")
    if len(hits) > 1:
      raise FolderDatasetError(
          f"Class {key!r} matches several folders in {split_dir}: "
          f"{', '.join(h.name for h in hits)}; make config.data.class_folders unambiguous.")
    found.append(hits[0])
  return found


def scan_split(root: str | os.PathLike, split: str, classes: Sequence[str],
               alt_names: Sequence[str] = ()) -> list[Entry]:
  """Lists (path, label) for every image file of a split, sorted by class then file name."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FolderDatasetError(
        f"Dataset folder {root} does not exist. Expected the layout {LAYOUT}, e.g. "
        f"{root}/{split}/n02690373/xxx.JPEG; set config.data.manual_dir to its root.")
  split_dir = root / split
  if not split_dir.is_dir():
    present = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise FolderDatasetError(
        f"Split folder {split_dir} does not exist (found: {', '.join(present) or 'nothing'}). "
        f"Expected the layout {LAYOUT}; set config.data.train_split / test_split.")
  entries = []
  for label, folder in enumerate(match_class_folders(split_dir, classes, alt_names)):
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
      raise FolderDatasetError(
          f"Class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); every "
          "class needs at least one image in every split.")
    entries.extend(Entry(str(f), label) for f in files)
  return entries


def load_rgb(path: str, size: int) -> tuple[np.ndarray | None, str | None, str | None]:
  """Decodes one image to uint8 (size, size, 3) RGB.

  Returns (image, original_mode, None) or (None, None, reason) when the file cannot be
  read; any mode (L, LA, RGBA, P, CMYK, I;16, ...) is converted to RGB. Resizing squashes to
  size×size with PIL's bilinear filter, as torchvision's `Resize((size, size))` does on PIL
  images in the official evaluation transform.
  """
  try:
    with Image.open(path) as img:
      img.load()  # forces the full decode: truncated files fail here
      mode = img.mode
      if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
      rgb = img.convert("RGB")
      if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
      return np.asarray(rgb, dtype=np.uint8), mode, None
  except Exception as e:  # PIL raises many types for bad files
    reason = f"{type(e).__name__}: {e}"
    logging.warning("Skipping unreadable image %s (%s)", path, reason)
    return None, None, reason
