"""Errors a user can fix. The CLIs turn these into one line and exit status 2.

Anything else escaping is a bug in hepprune and keeps its traceback.
"""


class HepPruneError(Exception):
    """Base class: a bad input, reported as one line without a traceback."""


class ConfigError(HepPruneError):
    """The experiment config is malformed, has unknown keys, or out-of-range values."""


class DataError(HepPruneError):
    """A dataset file is missing, unreadable, or does not follow the HDF5 schema."""


class RunError(HepPruneError):
    """A run directory is missing a stage's output or conflicts with the request."""
