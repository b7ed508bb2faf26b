"""Audience intelligence helpers: the tested logic behind the numbered notebooks.

Each module does one stage of the pipeline (``generate`` -> ``ingest`` -> ``weights``/``fusion`` ->
``segment`` -> ``survival`` -> ``affinity`` -> ``lookalike`` -> ``export``); notebooks narrate and call them.
"""

__version__ = "0.1.0"
