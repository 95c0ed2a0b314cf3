"""Evaluation: batched inference on a mesh, confusion-matrix metrics, the DFM shortcut test
and learning dynamics on band-limited views."""
