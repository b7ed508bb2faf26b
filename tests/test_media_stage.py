"""The media stage runs without exposures (a user's own table): it skips and says why."""

from helpers import paths
from helpers.media import stage


def test_stage_skips_without_exposures(tmp_path):
    P = paths.resolve(tmp_path / "data", tmp_path / "reports")
    S = stage.prepare(P)
    assert not S.ok and "exposures.parquet" in S.reason and "skipped" in S.reason
    assert stage.reach_section(S) is None and stage.budget_section(S, []) is None
    assert stage.daypart_section(S) is None and stage.experiments_section(S) is None
