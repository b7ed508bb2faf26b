"""Media intelligence: reach and frequency, budget allocation, dayparting, attribution, experiments, plan.

Modules: :mod:`.reach`, :mod:`.budget`, :mod:`.daypart`, :mod:`.attribution`, :mod:`.experiments`,
:mod:`.plan` (the marketer's plan, also behind the Explorer's Plan view) and :mod:`.data` (reading the
media tables of a run). The synthetic exposures with planted truth come from
:mod:`helpers.sources.exposures`.
"""


def exposures_module():
    """:mod:`helpers.sources.exposures`, also while the ``helpers.sources`` package itself is mid-rewrite."""
    try:
        from helpers.sources import exposures
        return exposures
    except ImportError:
        import importlib.util
        import sys
        from pathlib import Path

        name = "helpers.sources.exposures"
        if name in sys.modules:
            return sys.modules[name]
        f = Path(__file__).resolve().parents[1] / "sources" / "exposures.py"
        spec = importlib.util.spec_from_file_location(name, f)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
