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


def test_dictionary_file_is_the_source_of_columns_and_category_lists():
    days, cols = S.read_dictionary()
    assert cols == S.COLUMNS and days == S.CHURN_INACTIVE_DAYS == 90
    assert S.AGE_GROUPS == list(S.BY_NAME["age_group"].categories) and S.AGE_GROUPS[0] == "18-24"
    assert S.PURCHASE_INTENTS == list(S.BY_NAME["offline_purchase_intent"].categories)
    assert S.BY_NAME["churned_in_last_90_days"].description.endswith("last_seen_days_ago > 90.")
    # the bought attributes are optional, nullable and come from the partner or the broker
    assert set(S.SECOND_PARTY) == {"partner_purchase_categories", "traveler_type", "event_attendance_genres"}
    assert all(not S.BY_NAME[c].required and S.BY_NAME[c].nullable for c in S.SECOND_PARTY + S.THIRD_PARTY)


@pytest.mark.parametrize("entry, message", [
    ('{name: a, kind: float, source: 1st party, description: d, maximum: 3}', r"column 2 \(a\): unknown key\(s\) \['maximum'\]"),
    ('{name: a, kind: decimal, source: 1st party, description: d}', r"column 2 \(a\): kind must be one of"),
    ('{name: a, kind: int, source: 4th party, description: d}', r"source one of .*'4th party'"),
    ('{name: a, kind: int, source: 1st party}', r"column 2 \(a\): expected a mapping with name, kind, source and desc"),
])
def test_malformed_dictionary_names_file_entry_and_expectation(tmp_path, entry, message):
    f = tmp_path / "dictionary.yaml"
    f.write_text("churn_inactive_days: 30\ncolumns:\n  - {name: id, kind: id, source: 1st party, description: x}\n"
                 f"  - {entry}\n")
    with pytest.raises(ValueError, match=message) as e:
        S.read_dictionary(f)
    assert str(f) in str(e.value)


def test_dictionary_placeholder_takes_the_files_rule(tmp_path):
    f = tmp_path / "dictionary.yaml"
    f.write_text("churn_inactive_days: 30\ncolumns:\n  - {name: c, kind: bool, source: derived, required: false, "
                 "description: 'inactive > {churn_inactive_days} days'}\n  - {name: k, kind: category, "
                 "source: 2nd party, categories: [x, y], description: k}\n")
    days, (c, k) = S.read_dictionary(f)
    assert days == 30 and c.description == "inactive > 30 days" and not c.required
    assert k.categories == ("x", "y") and k.dtype == "string"
