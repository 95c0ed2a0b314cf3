"""Benchmarks: training throughput, input pipeline, DFM engine, plain inference, DFM searches.

One module per benchmark (`train`, `input_pipeline`, `dfm`, `plain`, `search`); `common`
holds what they share (`emit`, timing, FLOP counts, the plain-inference rate). Every
benchmark prints a readable table and, as its very last line, one JSON object with the same
figures, so scripts can compare runs (`tail -n 1 | python -m json.tool`). Rates are measured
after a warm-up call (compilation excluded) and are ratios of work to wall time in the same
run; nothing here asserts a speed.
"""

from freqjax.bench.common import emit
from freqjax.bench.dfm import dfm_throughput, official_forward_count
from freqjax.bench.input_pipeline import input_throughput
from freqjax.bench.plain import plain_throughput
from freqjax.bench.search import search_comparison, search_table
from freqjax.bench.train import train_throughput

__all__ = [
    "dfm_throughput",
    "emit",
    "input_throughput",
    "official_forward_count",
    "plain_throughput",
    "search_comparison",
    "search_table",
    "train_throughput",
]
