"""freqjax's generator of the synthetic sets Syn-1 .. Syn-4 (spec: shared/docs/synthetic.md).

Pure NumPy and deterministic from its seed. Two parts:
- `draw_roles(params)`: the dataset-level frequencies (control vocabulary, special frequencies
  of C0..C2, C3's vocabulary inside band B_k, distractor pool), drawn once per dataset;
- `make_image(...)`/`generate_split(...)`: the images, each seeded by (seed, split, class,
  index) so any image can be regenerated alone and the set does not depend on write order.

Frequencies are integer (u, v): u the row (vertical) and v the column (horizontal) frequency,
u, v in [-S/2, S/2 - 1]; in the centred layout (fftshift) a frequency sits at index
(u + S/2, v + S/2). One representative per conjugate pair is stored (u > 0, or u == 0 and
v > 0); its partner (-u, -v) is implied.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

NUM_CLASSES = 4
CLASS_NAMES = ("C0", "C1", "C2", "C3")
LUMINANCE = np.array([0.2989, 0.5870, 0.1140])
_SPLIT_IDS = {"train": 1, "test": 2}
_MAX_ATTEMPTS = 100_000


def params_dict(p: Any) -> dict:
  """Generator parameters as a plain JSON-able dict (accepts a ConfigDict or a Mapping)."""
  d = p.to_dict() if hasattr(p, "to_dict") else dict(p)
  out = {}
  for k, v in d.items():
    if isinstance(v, (tuple, list)):
      v = [list(x) if isinstance(x, (tuple, list)) else x for x in v]
    out[k] = v
  # JSON has no inf: an open upper band edge is written as null.
  out["bands"] = [[lo, None if hi is None or math.isinf(hi) else hi] for lo, hi in out["bands"]]
  return out


def _bands(p: Mapping) -> list[tuple[float, float]]:
  return [(lo, math.inf if hi is None else hi) for lo, hi in p["bands"]]


def band_of(u: int, v: int, bands) -> int:
  """1-based index of the radial band holding frequency (u, v)."""
  rho = math.hypot(u, v)
  for k, (lo, hi) in enumerate(bands, start=1):
    if lo <= rho < hi:
      return k
  raise ValueError(f"frequency ({u}, {v}) lies in no band")


def _band_candidates(size: int, bands) -> dict[int, list[tuple[int, int]]]:
  """Representatives that may be planted, per band: not DC, not on the Nyquist row/column."""
  half = size // 2
  out: dict[int, list[tuple[int, int]]] = {k: [] for k in range(1, len(bands) + 1)}
  for u in range(0, half):
    for v in range(-half + 1, half):
      if u == 0 and v <= 0:
        continue  # (0, 0) is DC; (0, -v) is the partner of (0, v)
      out[band_of(u, v, bands)].append((u, v))
  return out


def _canonical(f) -> tuple[int, int]:
  """Orbit of f under the augmentation's symmetries (u,v) ~ (±u, ±v)."""
  return abs(f[0]), abs(f[1])


def _separated(f, g, min_sep: int) -> bool:
  a, b = _canonical(f), _canonical(g)
  return max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= min_sep


def draw_roles(p: Mapping) -> dict:
  """Draws every role's frequencies for a dataset, deterministically from p['seed'].

  Rules (synthetic.md): C3's vocabulary lies in band B_k and nothing else does; the control
  vocabulary and distractor pool have 2 frequencies in each other band; each of C0..C2 has
  its special frequencies in distinct non-B_k bands; all frequencies are distinct under
  (u,v) ~ (±u,±v) and at least `min_separation` apart (Chebyshev distance of their orbits),
  except C3's own, which need only be distinct. Candidates that break a rule are never
  drawn; if some role has no candidate left, the whole draw restarts from the same stream.
  """
  bands = _bands(p)
  k = int(p["band"])
  nb = len(bands)
  if not 1 <= k <= nb:
    raise ValueError(f"synthetic band must be in 1..{nb}, got {k}")
  other = [b for b in range(1, nb + 1) if b != k]
  cands = _band_candidates(int(p["size"]), bands)
  sep = int(p["min_separation"])
  per_band = lambda n: [n // len(other) + (i < n % len(other)) for i in range(len(other))]
  rng = np.random.default_rng([int(p["seed"]), 0x5F3C])

  for _ in range(_MAX_ATTEMPTS):
    drawn: list[tuple[tuple[int, int], str]] = []

    def pick(band: int, role: str, drawn=drawn):
      ok = []
      for f in cands[band]:
        good = True
        for g, grole in drawn:
          if _canonical(f) == _canonical(g):
            good = False
          elif not (role == "c3" and grole == "c3") and not _separated(f, g, sep):
            good = False
          if not good:
            break
        if good:
          ok.append(f)
      if not ok:
        return None
      f = ok[int(rng.integers(len(ok)))]
      drawn.append((f, role))
      return f

    roles: dict[str, Any] = {"c3": [], "control": [], "distractor": [], "special": {}}
    failed = False
    for _ in range(int(p["c3_vocabulary"])):
      f = pick(k, "c3")
      if f is None:
        failed = True
        break
      roles["c3"].append(f)
    for role, n in (("control", int(p["num_control"])), ("distractor", int(p["num_distractors"]))):
      for band, count in zip(other, per_band(n)):
        for _ in range(count):
          f = None if failed else pick(band, role)
          if f is None:
            failed = True
            break
          roles[role].append(f)
    for c in range(3):
      nsp = int(p["specials_per_class"])
      chosen = rng.choice(other, size=min(nsp, len(other)), replace=False)
      roles["special"][CLASS_NAMES[c]] = []
      for i in range(nsp):
        f = None if failed else pick(int(chosen[i % len(chosen)]), "special")
        if f is None:
          failed = True
          break
        roles["special"][CLASS_NAMES[c]].append(f)
    if not failed:
      return _describe(roles, bands)
  raise RuntimeError(
      "Could not draw synthetic frequencies that satisfy the separation rules; lower "
      "data.synthetic.min_separation or the number of frequencies per role."
  )


def _describe(roles, bands) -> dict:
  item = lambda f: {"u": int(f[0]), "v": int(f[1]), "band": band_of(f[0], f[1], bands)}
  return {
      "control": [item(f) for f in roles["control"]],
      "distractor": [item(f) for f in roles["distractor"]],
      "c3": [item(f) for f in roles["c3"]],
      "special": {c: [item(f) for f in fs] for c, fs in roles["special"].items()},
  }


def class_frequencies(roles: Mapping, class_index: int) -> list[tuple[int, int]]:
  """The frequencies that distinguish a class: C0..C2's specials, or C3's vocabulary."""
  fs = roles["c3"] if class_index == 3 else roles["special"][CLASS_NAMES[class_index]]
  return [(f["u"], f["v"]) for f in fs]


def planted_masks(roles: Mapping, size: int) -> np.ndarray:
  """Boolean (num_classes, size, size) maps of each class's planted cells, centred layout.

  Both cells of each conjugate pair of the class's special frequencies (C0..C2) or of its
  vocabulary (C3) are True; control and distractor cells are planted for no class.
  """
  half = size // 2
  out = np.zeros((NUM_CLASSES, size, size), bool)
  for c in range(NUM_CLASSES):
    for u, v in class_frequencies(roles, c):
      out[c, u + half, v + half] = True
      out[c, -u + half, -v + half] = True
  return out


def role_mask(roles: Mapping, role: str, size: int) -> np.ndarray:
  """Boolean (size, size) map of the 'control' or 'distractor' cells (both of each pair)."""
  half = size // 2
  out = np.zeros((size, size), bool)
  for f in roles[role]:
    out[f["u"] + half, f["v"] + half] = True
    out[-f["u"] + half, -f["v"] + half] = True
  return out


def _contrasting_colours(rng, min_contrast: float):
  while True:
    ca, cb = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    if abs(float(LUMINANCE @ cb) - float(LUMINANCE @ ca)) >= min_contrast:
      return ca, cb


def make_image(p: Mapping, roles: Mapping, split: str, class_index: int, index: int) -> np.ndarray:
  """One uint8 (S, S, 3) image of the given class, seeded by (seed, split, class, index)."""
  size = int(p["size"])
  rng = np.random.default_rng([int(p["seed"]), _SPLIT_IDS[split], class_index, index])
  fq = lambda fs: [(f["u"], f["v"]) for f in fs]
  comps: list[tuple[tuple[int, int], tuple[float, float]]] = []
  if class_index == 3:
    vocab = fq(roles["c3"])
    n = int(rng.integers(3, len(vocab) + 1))
    for i in rng.choice(len(vocab), size=n, replace=False):
      comps.append((vocab[i], tuple(p["c3_amplitude"])))
  else:
    control = fq(roles["control"])
    for i in rng.choice(len(control), size=int(p["control_per_image"]), replace=False):
      comps.append((control[i], tuple(p["control_amplitude"])))
    special = fq(roles["special"][CLASS_NAMES[class_index]])
    n = int(rng.integers(1, len(special) + 1))
    for i in rng.choice(len(special), size=n, replace=False):
      comps.append((special[i], tuple(p["special_amplitude"])))
  distract = fq(roles["distractor"])
  for i in rng.choice(len(distract), size=int(p["distractors_per_image"]), replace=False):
    comps.append((distract[i], tuple(p["distractor_amplitude"])))

  y, x = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  g = np.zeros((size, size))
  for (u, v), (lo, hi) in comps:
    a = rng.uniform(lo, hi)
    phi = rng.uniform(0.0, 2 * np.pi)
    g += a * np.cos(2 * np.pi * (u * y + v * x) / size + phi)
  g = (g - g.min()) / max(g.max() - g.min(), 1e-12)
  ca, cb = _contrasting_colours(rng, float(p["min_luminance_contrast"]))
  img = (1.0 - g)[..., None] * ca + g[..., None] * cb
  img = img + rng.normal(0.0, float(p["noise_sigma"]), img.shape)
  return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def split_size(p: Mapping, split: str) -> int:
  return int(p["train_per_class" if split == "train" else "test_per_class"])


def generate_split(p: Mapping, roles: Mapping, split: str):
  """Yields (key, image, label) for every image of a split, class-major order."""
  n = split_size(p, split)
  for c, i in itertools.product(range(NUM_CLASSES), range(n)):
    yield c * n + i, make_image(p, roles, split, c, i), c
