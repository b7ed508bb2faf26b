"""Statistics shared by every stage: :mod:`helpers.stats.core` (index vs base, interval, test, FDR,
base-size rule, tiers, weighted quantiles, Kish effective n, :func:`~helpers.stats.core.profile`)."""

from . import core  # noqa: F401
