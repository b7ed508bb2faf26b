"""The run configuration: presets load, the default mirrors the data dictionary, errors name file and key."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from helpers import config
from helpers import schema as S
from helpers.config import ConfigError, MissingRole


def _write(tmp_path, text: str, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


MINIMAL = """
id: cust
metrics:
  - {name: spend, label: Spend, unit: EUR/month, kind: money}
"""


def test_default_is_the_22_column_dictionary_plus_state_and_gender():
    cfg = config.load()
    assert cfg.is_default and cfg.id == "user_id"
    assert set(cfg.columns) == set(S.COLUMN_NAMES) | {"state", "gender"}
    for a in cfg.attributes:  # categories, party and type agree with helpers.schema
        if a.name in S.BY_NAME:
            col = S.BY_NAME[a.name]
            assert a.categories == col.categories, a.name
            assert col.source.startswith(a.party), a.name
            assert col.kind == a.type, a.name
            assert a.required == col.required, a.name
    for m in cfg.metrics:
        col = S.BY_NAME[m.name]
        assert m.unit == col.unit and m.max == col.max_value and m.type == col.kind, m.name
    assert {a.name for a in cfg.attributes if a.name in ("state", "gender")} == {"state", "gender"}
    assert not cfg.attribute("state").required and cfg.attribute("gender").party == "1st"
    assert [o.kind for o in cfg.outcomes] == ["conversion", "value", "churn_event"]
    assert cfg.survival.event == "churned_in_last_90_days" and cfg.survival.duration is None
    assert cfg.weighting.margins_path("/d").as_posix() == "/d/raw/population_margins.csv"


def test_env_var_selects_the_config(monkeypatch):
    monkeypatch.setenv("AUDIENCE_CONFIG", str(config.preset("telco")))
    assert config.load().name == "telco"
    monkeypatch.delenv("AUDIENCE_CONFIG")
    assert config.load().name == "default"
    assert config.load("telco").id == "customerID"  # a bare preset name


def test_telco_preset_roles_and_file():
    cfg = config.load("telco")
    assert cfg.survival.duration == "tenure" and cfg.survival.duration_unit == "months"
    assert cfg.survival.event == "Churn" and cfg.outcome("Churn").positive == "Yes"
    assert cfg.metric_names == ["MonthlyCharges", "TotalCharges", "n_services"]
    assert cfg.weighting.margins is None and not cfg.has("margins")
    assert cfg.dates.observation_date is None and not cfg.has("observation_date")
    assert cfg.input.resolved_path().exists()
    assert cfg.metric("TotalCharges").when_missing["fill"] == 0
    assert cfg.has("seed_outcome") and cfg.has("survival")


def test_labels_units_and_fallback():
    cfg = config.load()
    assert cfg.label("time_on_podcasts_min") == "Podcast listening time (min/day)"
    assert cfg.label("time_on_podcasts_min", unit=False) == "Podcast listening time"
    assert cfg.unit("avg_monthly_spend") == "USD/month"
    assert cfg.label("some_new_column") == "Some new column"
    assert config.tidy_title("MonthlyCharges") == "Monthly charges"
    assert config.load("telco").label("tenure") == "Tenure (months)"


def test_require_names_stage_and_role(tmp_path):
    cfg = config.load(_write(tmp_path, MINIMAL))
    cfg.require("04_segment_gmm", "metrics", "id")
    with pytest.raises(MissingRole) as e:
        cfg.require("06_churn_survival", "metrics", "survival.event")
    msg = str(e.value)
    assert "stage 06_churn_survival" in msg and "'survival.event'" in msg and "cfg.yaml" in msg
    assert e.value.stage == "06_churn_survival" and e.value.role == "survival.event"
    with pytest.raises(MissingRole, match="stage 08_lookalike_activation needs column role 'seed_outcome'"):
        cfg.require("08_lookalike_activation", "seed_outcome")
    with pytest.raises(MissingRole, match="column role 'margins'"):
        cfg.require("02_panel_weighting_fusion", "margins")


def test_outcome_indicator_rules():
    cfg = config.load()
    df = pd.DataFrame({"monthly_conversions": [0, 1, 3, None], "churned_in_last_90_days": [True, False, None, True],
                       "avg_monthly_spend": [0.0, 2.0, 0.0, 1.0]})
    assert cfg.outcome("monthly_conversions").indicator(df).tolist() == [False, True, True, False]
    assert cfg.outcome("churned_in_last_90_days").indicator(df).tolist() == [True, False, False, True]
    t = config.load("telco").outcome("Churn")
    assert t.indicator(pd.Series(["Yes", "No", " Yes", None])).tolist() == [True, False, True, False]
    assert t.rule == "Churn == 'Yes'"
    with pytest.raises(ConfigError, match="no outcome named 'nope'"):
        cfg.outcome("nope")


def test_overrides_from_parameters():
    cfg = config.load().with_overrides(delimiter=";", encoding="latin-1", observation_date="2014-12-31")
    assert (cfg.input.delimiter, cfg.input.encoding, cfg.dates.observation_date) == (";", "latin-1", "2014-12-31")
    assert cfg.fingerprint != config.load().fingerprint
    assert config.load().with_overrides(delimiter="\\t").input.delimiter == "\t"
    with pytest.raises(ConfigError, match="observation_date.*YYYY-MM-DD"):
        config.load().with_overrides(observation_date="31/12/2014")
    with pytest.raises(ConfigError, match="delimiter.*one character"):
        config.load().with_overrides(delimiter=";;")
    with pytest.raises(ConfigError, match="unknown encoding 'utf-99'"):
        config.load().with_overrides(encoding="utf-99")


def test_any_number_of_metrics(tmp_path):
    cfg = config.load(_write(tmp_path, MINIMAL))
    assert cfg.metric_names == ["spend"] and cfg.metric("spend").type == "float"
    many = "id: u\nmetrics:\n" + "".join(f"  - {{name: m{i}, kind: count}}\n" for i in range(9))
    cfg = config.load(_write(tmp_path, many, "many.yaml"))
    assert len(cfg.metrics) == 9 and cfg.metric("m3").type == "int" and cfg.label("m3") == "M3"


@pytest.mark.parametrize("body,key,expected", [
    ("metrics: []\n", "id", "a value"),
    ("id: u\ncolour: red\n", "colour", "one of name, description"),
    ("id: u\nmetrics:\n  - {name: a, kind: minute}\n", "metrics[0].kind", "one of minutes, count, money"),
    ("id: u\nmetrics:\n  - {label: A}\n", "metrics[0].name", "a value"),
    ("id: u\nmetrics: {name: a}\n", "metrics", "a list of entries"),
    ("id: u\nattributes:\n  - {name: a, type: category}\n", "attributes[0].categories", "the list of allowed"),
    ("id: u\nattributes:\n  - {name: a, type: colour}\n", "attributes[0].type", "one of category, ordinal"),
    ("id: u\nattributes:\n  - {name: a, type: bool, party: 4th}\n", "attributes[0].party", "one of 1st"),
    ("id: u\noutcomes:\n  - {name: r, kind: response}\n", "outcomes[0].positive", "the value meaning 'yes'"),
    ("id: u\noutcomes:\n  - {name: r, kind: sale, positive: 1}\n", "outcomes[0].kind", "one of conversion"),
    ("id: u\ndates: {observation_date: 2014-13-45}\n", "dates.observation_date", "ISO date"),
    ("id: u\ndates: {observation_date: June 2014}\n", "dates.observation_date", "ISO date"),
    ("id: u\ninput: {delimiter: ';;'}\n", "input.delimiter", "one character"),
    ("id: u\ninput: {encoding: klingon}\n", "input.encoding", "Python codec"),
    ("id: u\nsurvival: {event: gone}\n", "survival.event", "declare it under 'outcomes'"),
    ("id: u\nsurvival: {duration_unit: fortnights}\n", "survival.duration_unit", "one of days"),
    ("id: u\nweighting: {variables: [age]}\n", "weighting.variables", "declared attribute"),
    ("id: u\nmetrics:\n  - {name: a}\n  - {name: a}\n", "metrics[1].name", "each column once"),
    ("id: u\nmetrics:\n  - {name: u}\n", "metrics[0].name", "other than the id"),
    ("id: u\nmetrics:\n  - {name: a, min: low}\n", "metrics[0].min", "a number"),
    ("id: u\nexport: {allow_third_party: 'yes'}\n", "export.allow_third_party", "true or false"),
    ("id: u\nexport: {allow_raw_ids: true}\n", "export.allow_raw_ids", "one of allow_third_party"),
    ("- id\n- u\n", "(top level)", "a YAML mapping"),
])
def test_invalid_configs_name_file_key_and_expectation(tmp_path, body, key, expected):
    p = _write(tmp_path, body, "bad.yaml")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    msg = str(e.value)
    assert str(p) in msg and f"key {key!r}" in msg and expected in msg, msg


def test_missing_empty_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml.*file not found.*telco"):
        config.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="the file is empty"):
        config.load(_write(tmp_path, "", "empty.yaml"))
    with pytest.raises(ConfigError, match=r"key 'line \d+, column \d+': not valid YAML"):
        config.load(_write(tmp_path, "id: u\nmetrics: [\n  - a: b\n", "broken.yaml"))
    p = tmp_path / "utf16.yaml"
    p.write_bytes("id: u\n".encode("utf-16"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(p)


def test_export_policy_key(tmp_path):
    """``export.allow_third_party``: false in the shipped presets and when absent, true only when the file
    says so (a YAML boolean)."""
    for name in ("default", "telco"):
        assert config.load(name).export.allow_third_party is False
        assert config.load(name).raw["export"] == {"allow_third_party": False}  # stated, not implied
    assert config.load(_write(tmp_path, MINIMAL)).export.allow_third_party is False
    yes = config.load(_write(tmp_path, MINIMAL + "export:\n  allow_third_party: true\n", "yes.yaml"))
    assert yes.export.allow_third_party is True


def test_presets_readme_documents_every_key():
    text = (config.PRESETS / "README.md").read_text()
    keys = ["name", "description", "id", "input.path", "input.fallback", "input.delimiter", "input.encoding",
            "input.mapping", "metrics[].when_missing", "metrics[].transform", "metrics[].cluster",
            "attributes[].party", "attributes[].categories", "dates.customer_since", "dates.recency",
            "dates.recency_unit", "dates.observation_date", "outcomes[].kind", "outcomes[].positive",
            "survival.duration", "survival.event", "survival.duration_unit", "weighting.margins",
            "weighting.variables", "derived", "export.allow_third_party"]
    for k in keys:
        assert f"`{k}" in text, k
    from helpers.config import _ATTR_KEYS, _METRIC_KEYS, _OUT_KEYS, TOP_KEYS
    for k in TOP_KEYS:
        assert f"`{k}" in text, k
    for group, ks in (("metrics", _METRIC_KEYS), ("attributes", _ATTR_KEYS), ("outcomes", _OUT_KEYS)):
        for k in ks:
            assert f"{group}[].{k}" in text or f"`{k}`" in text or f"/ `{k}`" in text, (group, k)


def test_outcome_sql_matches_indicator():
    import duckdb
    df = pd.DataFrame({"monthly_conversions": [0, 2, None], "churned_in_last_90_days": [True, False, None],
                       "Churn": ["Yes", "No", None]})
    con = duckdb.connect()
    con.register("t", df)
    for o in [*config.load().outcomes_of("conversion", "churn_event"), config.load("telco").outcome("Churn")]:
        got = [int(x[0]) for x in con.execute(f"SELECT {o.sql()} FROM t").fetchall()]
        assert got == o.indicator(df).astype(int).tolist(), o.name


def test_readme_generated_blocks_are_current():
    """The README's dictionary table and Telco configuration are generated (scripts/update_readme.py)."""
    import importlib.util

    from helpers.paths import REPO_ROOT
    spec = importlib.util.spec_from_file_location("update_readme", REPO_ROOT / "scripts" / "update_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = (REPO_ROOT / "README.md").read_text()
    assert mod.render(readme) == readme, "README is stale: run scripts/update_readme.py"
    assert mod.telco_block() in readme and "make reports CONFIG=src/helpers/config/presets/telco.yaml" in readme


def test_stage_needs_follow_the_configuration(tmp_path):
    for name in ("default", "telco"):
        cfg = config.load(name)
        for stage in config.STAGE_NEEDS:
            cfg.require_stage(stage)  # both shipped configurations serve every stage
    bare = config.load(_write(tmp_path, "id: u\nattributes:\n  - {name: a, type: bool}\n"))
    assert bare.missing("metrics", "attributes", "survival") == ["metrics", "survival"]
    with pytest.raises(MissingRole, match="stage 04_segment_gmm needs column role 'metrics'"):
        bare.require_stage("04_segment_gmm")
    with pytest.raises(MissingRole, match="stage 06_churn_survival needs column role 'survival'"):
        bare.require_stage("06_churn_survival")
    bare.require_stage("99_unknown")
