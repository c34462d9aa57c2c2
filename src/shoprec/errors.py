"""Project errors. Every error names the offending file, column, row or value."""

from __future__ import annotations


class ShoprecError(Exception):
    """Base class for errors shoprec raises on purpose."""


class InputDataError(ShoprecError, ValueError):
    """Raw input data is missing, malformed or inconsistent.

    The message names the file, the column and the first offending row (1-based data row,
    header excluded) or value, e.g.
    ``transactions_train.csv: column 'price': row 3: cannot parse 'abc' as float``.
    """


class ArtifactError(ShoprecError, FileNotFoundError):
    """A pipeline artifact a step needs is missing or was written by an incompatible version."""


class MemoryBudgetError(ShoprecError, MemoryError):
    """A step's estimated peak resident memory is above ``memory.ceiling_gib``.

    Raised before the step allocates (or writes) anything large; the message names the step,
    the estimate, the ceiling and the config keys that lower the estimate.
    """
