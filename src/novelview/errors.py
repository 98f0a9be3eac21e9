"""User-facing errors.

Anything raised as a :class:`NovelviewError` is the user's to fix (bad file, bad pose, bad option); the CLI
prints its message on one line and exits non-zero without a traceback. Every other exception is our bug.
"""

from __future__ import annotations


class NovelviewError(Exception):
    """An error caused by input the user can fix; the message names the culprit and the fix."""


class PoseError(NovelviewError, ValueError):
    """A camera pose that is not a finite rigid transform."""


class DataError(NovelviewError):
    """A dataset, image or camera file that cannot be read."""


class ConfigError(NovelviewError, ValueError):
    """An unknown preset, out-of-range hyperparameter or inconsistent option."""


class CheckpointError(NovelviewError):
    """A checkpoint directory that is missing files or was written by an incompatible version."""
