"""Audience Affinity Explorer: an offline Flask web app over the pipeline's artifacts.

``python -m helpers.explorer --host 127.0.0.1 --port 8050 --data DIR --reports DIR`` (``make explorer``)
serves the segment map, persona cards, affinity heatmap, the lookalike stage's audience, questions, media
plans and activation exports, all read from the run's artifacts and results (it fits no model). Data
functions are gathered in :mod:`helpers.explorer.data`, the Flask app factory is :mod:`helpers.explorer.app`.
"""

__all__ = ["create_app"]


def __getattr__(name: str):
    """Import the Flask layer lazily, so the data functions work without importing Flask."""
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'helpers.explorer' has no attribute {name!r}")
