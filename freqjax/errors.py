"""User errors: bad input that the user can fix, reported as one line (exit code 2).

Every exception a user can cause by what they pass in (a config value, a dataset folder, an
artifact file, a checkpoint, a workdir) derives from `UserError`; the launchers (`cli.run`)
print its message alone and exit with code 2. Set FREQJAX_TRACEBACK=1 (or pass
--traceback) to see the traceback as well. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
  """Bad input; the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
  """A config value is invalid."""


class WorkdirError(UserError):
  """The workdir belongs to another run, or another launch holds it."""


class CheckpointError(UserError, ValueError):
  """A checkpoint does not fit the configured model, or there is none."""


class DatasetError(UserError, ValueError):
  """A dataset is missing, laid out wrongly, or does not match the config."""


class TrainingDivergedError(UserError, FloatingPointError):
  """Training produced a non-finite loss."""


class ArtifactShapeError(UserError, ValueError):
  """An artifact (e.g. DFMs) does not fit the data it is applied to."""
