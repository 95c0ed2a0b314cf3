"""Candidate sets: counts, conjugate pairing, the official masks, score-map assembly."""

import numpy as np
import pytest

from freqjax.spectral import candidates, masks


def _official_mask(size, patch, r, c):
  """The authors' test_rank.py mask construction, transcribed."""
  m = np.ones((size, size))
  m[patch * r : patch * (r + 1), patch * c : patch * (c + 1)] = 0
  if size // patch - r < size // patch and size // patch - c < size // patch:
    m[size - patch * r : size - patch * (r - 1), size - patch * c : size - patch * (c - 1)] = 0
  return m


@pytest.mark.parametrize("size,patch", [(32, 1), (32, 2), (224, 7), (16, 4)])
def test_official_masks_equal_the_authors_loop(size, patch):
  cs = candidates.official(size, patch)
  keep = 1 - cs.removal_masks().astype(np.float64)
  got = {m.tobytes() for m in keep}
  want = {
      _official_mask(size, patch, r, c).tobytes()
      for r in range(size // patch)
      for c in range(size // patch // 2 + 1)
  }
  assert got == want
  assert len(cs) == len(want)  # duplicates (the DC column's r and S - r) evaluated once


def test_official_score_map_writes_in_loop_order():
  size, patch = 16, 1
  cs = candidates.official(size, patch)
  scores = np.arange(len(cs), dtype=np.float64) + 1
  got = cs.score_map(scores)
  want = np.zeros((size, size))
  keep = 1 - cs.removal_masks()
  for r in range(size):
    for c in range(size // 2 + 1):
      k = [i for i, m in enumerate(keep) if np.array_equal(m, _official_mask(size, 1, r, c))][0]
      want[r, c] = scores[k]
      if r > 0 and c > 0:
        want[size - r, size - c] = scores[k]
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "size,patch,expected", [(32, 1, 514), (224, 7, 514), (32, 2, 256), (28, 7, 10)]
)
def test_paired_set_scores_each_pair_once(size, patch, expected):
  cs = candidates.paired(size, patch)
  assert len(cs) == expected
  removal = cs.removal_masks()
  assert len({m.tobytes() for m in removal}) == len(cs)
  for m in removal:
    assert masks.is_conjugate_symmetric(m)
  # Every cell gets exactly one score, and for p=1 and odd p the map is symmetric.
  smap = cs.score_map(np.arange(len(cs), dtype=np.float64) + 1)
  assert (smap > 0).all()
  if patch % 2 == 1:
    np.testing.assert_array_equal(smap, masks.conjugate(smap))


def test_paired_p1_candidate_removes_exactly_a_conjugate_pair():
  cs = candidates.paired(32, 1)
  sizes = cs.removal_masks().reshape(len(cs), -1).sum(1)
  assert sorted(set(sizes)) == [1, 2] and (sizes == 1).sum() == 4  # 4 self-conjugate cells


def test_patch_must_divide_size():
  with pytest.raises(ValueError, match="does not divide"):
    candidates.make(32, 3)
  with pytest.raises(ValueError, match="Unknown candidate set"):
    candidates.make(32, 1, "fancy")
