"""DFM search methods: the exhaustive ranking and three that score far fewer candidates.

Every method returns per class a score for every candidate of the final candidate set (the
analysis patch size), the same `scores` map the exhaustive ranking gives, and a `dfm_key`
map whose top fraction is the method's DFM. Cells a method scored exactly (for `auto`: on
some or all of the class's images) always rank above those it only estimated, so a DFM no
larger than that part comes from exact scores alone. One module per method, each registering
its entry in `base.REGISTRY`; `run` dispatches by `config.analysis.search`:

- `exhaustive` (`_exhaustive`): every candidate, exactly (the reference; `dfm.Engine.rank`).
- `auto` (`_auto`): a screen whose cost does not grow with the output count, then exact
  scores raced over the class's images (a candidate scored on 4, 8, 16, ... images only as
  far as its confidence interval matters) in the order of a bound on what they may change,
  until the exhaustive DFM's mass it may have missed is bounded below `tolerance`; returns
  that bound per class (`missed_mass_bound`).
- `screened` (`_screened`): a first-order screen of every candidate from one forward and
  backward pass per image, then exact scores for the `multiple` × DFM-size candidates the
  screen ranks highest plus a random `audit` sample of the rest (which estimates how many
  true DFM candidates the screen missed).
- `coarse_to_fine` (`_coarse_to_fine`): exact scores of every candidate at the coarsest patch
  size, then at each finer level only of the candidates overlapping the best patches of the
  level before.
- `hfss` (`_hfss`): HFSS (`freqjax.spectral.hfss`), its score map averaged per candidate.

`base` holds what they share: `Result`, `Request`, the registry and `run`, `settings` and
`validate`, `ranking_key` and the engine and store helpers. All exact scores come from
`dfm.Engine` (sharded, chunked, resumable through the store directory); the screen's
gradients and each level's choice of candidates are saved there too, so a run killed at any
point resumes to identical results.
"""

# Importing a method's module registers it (_hfss exports nothing else).
from freqjax.spectral.search import _hfss  # noqa: F401
from freqjax.spectral.search._auto import auto, bound, reduced_linear_scores
from freqjax.spectral.search._coarse_to_fine import coarse_to_fine
from freqjax.spectral.search._exhaustive import exhaustive
from freqjax.spectral.search._screened import (
    first_order_scores,
    linearised_scores,
    screen_gradients,
    screened,
    target_values,
)
from freqjax.spectral.search.base import (
    METHODS,
    REGISTRY,
    SCREEN_TARGETS,
    VERSIONS,
    Request,
    Result,
    default_levels,
    dfm_candidate_count,
    divisors,
    levels_of,
    ranking_key,
    run,
    settings,
    settings_key,
    validate,
)

if set(REGISTRY) != set(METHODS):  # every method has its module, and no module is unnamed
  raise ImportError(f"search methods {sorted(REGISTRY)} differ from METHODS {METHODS}")

__all__ = [
    "METHODS",
    "REGISTRY",
    "SCREEN_TARGETS",
    "VERSIONS",
    "Request",
    "Result",
    "auto",
    "bound",
    "coarse_to_fine",
    "default_levels",
    "dfm_candidate_count",
    "divisors",
    "exhaustive",
    "first_order_scores",
    "levels_of",
    "linearised_scores",
    "ranking_key",
    "reduced_linear_scores",
    "run",
    "screen_gradients",
    "screened",
    "settings",
    "settings_key",
    "target_values",
    "validate",
]
