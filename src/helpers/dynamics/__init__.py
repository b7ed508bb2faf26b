"""Engagement dynamics: discrete-time Markov chains of monthly engagement states (weighted, per segment,
with shrinkage, customer-bootstrap intervals, absorbing-churn analysis, tests and customer value)."""

from . import markov  # noqa: F401
