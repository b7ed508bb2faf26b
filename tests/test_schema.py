"""The data dictionary as code: 22 columns, and the pandera schema accepts generated data and rejects bad data."""

import pandas as pd
import pandera.errors as pe
import pytest

from helpers import schema as S
from helpers.paths import REPO_ROOT


def test_exactly_22_columns_unique_names():
    assert len(S.COLUMNS) == 22
    assert len(set(S.COLUMN_NAMES)) == 22


def test_generated_panel_has_exactly_the_dictionary_columns(small_panel):
    assert list(small_panel.data.columns) == S.COLUMN_NAMES
    S.pandera_schema().validate(small_panel.data, lazy=True)


def test_schema_rejects_unknown_category_and_out_of_range(small_panel):
    bad = small_panel.data.head(20).copy()
    bad.loc[3, "age_group"] = "unknown"
    bad.loc[5, "time_on_podcasts_min"] = -1.0
    with pytest.raises(pe.SchemaErrors) as e:
        S.pandera_schema().validate(bad, lazy=True)
    failed = set(e.value.failure_cases["column"])
    assert {"age_group", "time_on_podcasts_min"} <= failed


def test_schema_rejects_extra_column(small_panel):
    with pytest.raises((pe.SchemaError, pe.SchemaErrors)):
        S.pandera_schema().validate(small_panel.data.head(5).assign(email="x"))


@pytest.mark.parametrize("value,ok", [("none", True), ("electronics", True), ("fashion|beauty", True),
                                      ("fashion|", False), ("cars", False), ("", False)])
def test_multi_valued_pattern(value, ok):
    assert bool(pd.Series([value]).str.fullmatch(S.multi_pattern(S.PURCHASE_CATEGORIES))[0]) is ok


def test_readme_dictionary_table_is_generated_from_schema():
    readme = (REPO_ROOT / "README.md").read_text()
    assert S.dictionary_markdown() in readme, "README's data dictionary is stale: run scripts/update_readme.py"
