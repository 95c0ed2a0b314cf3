"""The main job's DFMs find what the generator planted: on the syn1_small preset (shortened to
6 epochs and 10 test images per class, so that it fits in CI), the 5 % DFMs of C0 and C1
contain their planted special frequencies. This fails if the generator, the training, the
candidate masks or the ranking engine breaks."""

from freqjax import pipeline
from tests.conftest import load_config


def test_the_main_jobs_dfms_recover_the_planted_frequencies(tmp_path):
  c = load_config("configs/synthetic.py:syn1_small")
  c.data.data_dir = str(tmp_path / "data")
  c.data.synthetic.test_per_class = 10
  c.train.epochs = 6
  c.train.progress = False
  summary = pipeline.run_pipeline(c, str(tmp_path / "run"))
  assert summary["test_accuracy"] >= 0.9, summary["test_accuracy"]
  recall = summary["planted_recall"]
  assert recall[0] >= 0.9 and recall[1] >= 0.9, recall
  # Not trivially: C0's and C1's DFMs are 5 % of the spectrum, and their top-|planted| cells by
  # score are exactly the planted ones (4 of 4 cells each).
  assert summary["dfm_cells"][0] <= 0.06 * 32 * 32
  assert summary["top_planted_hits"][:2] == summary["planted_cells"][:2] == [4, 4]
