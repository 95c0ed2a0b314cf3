"""The printed DFM summary says why a DFM holds more cells than its threshold's."""

import numpy as np

from freqjax import artifacts
from freqjax.evaluation import dfm_summary
from freqjax.spectral import dfm as dfm_lib


def test_summary_names_the_ties_that_enlarge_a_dfm():
  maps = np.zeros((2, 8, 8), np.float32)
  maps[0] = np.arange(64).reshape(8, 8)  # all distinct: exactly int(0.05 · 64) = 3 cells
  maps[1, 0, :2] = [2.0, 1.0]  # 2 positive, 62 at 0: the boundary (3rd) is 0, all 64 kept
  art = artifacts.Artifact(
      "dfm",
      {"dfm": dfm_lib.dfms(maps, [0.05])},
      {
          "thresholds": [0.05],
          "classes": ["a", "b"],
          "candidates": {"mode": "paired"},
          "patch_size": 1,
      },
  )
  lines = dfm_summary.text(art, 0.05, None, maps).splitlines()
  a = next(x for x in lines if x.startswith("  a:"))
  b = next(x for x in lines if x.startswith("  b:"))
  assert a == "  a: 3 cells"
  assert b.startswith("  b: 64 cells (3 at 5% and 61 more that tie with the boundary score 0")
