"""The planted parameters file: shipped tables are bound by the world modules, and a malformed file is refused."""

import numpy as np
import pytest

from helpers import schema as S
from helpers.sources import behaviour as B
from helpers.sources import planted
from helpers.sources import world as W


def test_world_modules_bind_the_shipped_tables():
    p = planted.load()
    assert W.P_AGE is p.section("world")["P_AGE"]
    assert B.COPULA_R is p.section("behaviour")["COPULA_R"]
    assert W.SEGMENT_NAMES == p.labels["segments"] and W.K == 6
    # axes named after a dictionary column take its categories: the order the generator draws in
    assert W.P_AGE.shape == (W.K, len(S.AGE_GROUPS))
    assert W.P_PURCHASE.shape == (W.K, len(S.PURCHASE_CATEGORIES))
    assert W.INCLUSION_BY_AGE.shape == (len(S.AGE_GROUPS),)
    np.testing.assert_allclose(W.P_NET_WORTH.sum(axis=1), 1.0)


def test_tables_are_read_only():
    with pytest.raises(ValueError, match="read-only"):
        W.POP_SHARES[0] = 0.5


def _write(tmp_path, body: str):
    f = tmp_path / "planted.yaml"
    f.write_text("labels:\n  segments: [a, b]\n" + body)
    return f


@pytest.mark.parametrize("body, message", [
    ("world:\n  X:\n    doc: d\n    rows: segments\n    values: [0.5, 0.2, 0.3]\n",
     r"world\.X: values have shape \(3,\), expected \(2,\)"),
    ("world:\n  X:\n    doc: d\n    rows: segments\n    check: distribution\n    values: [0.5, 0.6]\n",
     r"world\.X: expected each row to sum to 1"),
    ("world:\n  X:\n    doc: d\n    rows: segments\n    columns: age_group\n    values: [[1, 2], [3, 4]]\n",
     r"world\.X: values have shape \(2, 2\), expected \(2, 6\)"),
    ("world:\n  X:\n    doc: d\n    rows: nowhere\n    values: [1, 2]\n",
     r"axis 'nowhere' is neither a label list"),
    ("world:\n  X:\n    doc: d\n    rows: segments\n    columns: segments\n    check: correlation\n"
     "    values: [[1, 0.5], [0.4, 1]]\n", r"expected a symmetric positive-definite"),
    ("world:\n  X:\n    doc: d\n    rows: segments\n    check: probability\n    values: [0.5, 1.5]\n",
     r"expected every value in \[0, 1\]"),
    ("world:\n  X:\n    rows: segments\n    values: [1, 2]\n", r"missing key\(s\) \['doc'\]"),
    ("world:\n  X:\n    doc: d\n    rows: segments\n    values: [[1, 2], [3]]\n", r"not a numeric table"),
])
def test_malformed_file_names_table_and_expectation(tmp_path, body, message):
    with pytest.raises(planted.PlantedError, match=message) as e:
        planted.parse(_write(tmp_path, body))
    assert "planted.yaml" in str(e.value)


def test_well_formed_file_parses(tmp_path):
    p = planted.parse(_write(tmp_path, "world:\n  X:\n    doc: d\n    rows: segments\n    columns: [u, v, w]\n"
                                       "    check: distribution\n    values: [[0.2, 0.3, 0.5], [1, 0, 0]]\n"))
    assert p.section("world")["X"].dtype == np.float64
    np.testing.assert_array_equal(p.section("world")["X"][1], [1.0, 0.0, 0.0])
    with pytest.raises(KeyError, match="no section 'behaviour'"):
        p.section("behaviour")


def test_tables_binds_in_the_order_asked_and_names_a_missing_table():
    age, shares = planted.tables("world", "P_AGE", "POP_SHARES")
    assert age is W.P_AGE and shares is W.POP_SHARES
    with pytest.raises(planted.PlantedError, match=r"section 'world' has no table\(s\) \['P_HEIGHT'\]"):
        planted.tables("world", "P_AGE", "P_HEIGHT")
