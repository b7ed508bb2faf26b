"""Property-based fuzz of ingestion (hypothesis): random cell corruption, quoted line breaks, blank lines and
random bytes in a user's CSV.

Properties, for every generated file:

* no unexplained exception: ingestion either returns or raises :class:`IngestError` (whose message names the
  file); anything else fails the test;
* accepted + rejected = input (the number of records of the file);
* exact physical line numbers: every quarantined row's ``_line`` is the physical line on which its record
  starts, as the generator wrote it (quoted line breaks and blank lines included);
* every planted defect is caught, and every untouched row is accepted.

For files with random bytes spliced in, the generator no longer knows the records, so the oracle is an
independent strict CSV parse of the bytes (Python's ``csv``): its record count and the first line of each
record. Deterministic (``derandomize=True``) so CI sees the same examples every run.
"""

from __future__ import annotations

import csv
import io
from collections import Counter

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from helpers import config
from helpers import generate as G
from helpers.ingest import IngestError, ingest_table

N_ROWS = 24
#: ~0.5 s per example (Ibis compiles the validation for each file), so 100 examples keep the test near a minute
FUZZ_EXAMPLES = int(__import__("os").environ.get("FUZZ_EXAMPLES", 100))
#: A run configuration with one column of each kind (id, number, count, ordinal, bool, date): the same
#: validation code as the 22-column dictionary, at a quarter of the compile time per example.
CONFIG = """
id: user_id
metrics:
  - {name: avg_monthly_spend, kind: money, max: 100000}
  - {name: monthly_conversions, kind: count, max: 1000}
attributes:
  - {name: age_group, type: ordinal, required: true, categories: ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]}
  - {name: presence_of_children, type: bool}
dates:
  customer_since: customer_since_date
"""
STATS: Counter = Counter()

#: values that break a column's rule whatever it is (unknown category / not a number / not a date ...)
BAD = {"age_group": "17-", "customer_since_date": "2021-02-30", "monthly_conversions": "2.5",
       "avg_monthly_spend": "twelve", "presence_of_children": "maybe"}
COLUMNS = ["user_id", "avg_monthly_spend", "monthly_conversions", "age_group", "presence_of_children",
           "customer_since_date"]


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    df = G.generate_panel(N_ROWS, seed=3).data[COLUMNS]
    t = df.astype({c: object for c in df.columns})
    t["customer_since_date"] = df["customer_since_date"].dt.strftime("%Y-%m-%d")
    t = t.astype(str).replace({"<NA>": "", "nan": "", "None": ""})
    t["note"] = "ok"  # an undeclared text column: kept, so quoted line breaks in it are valid
    return t


@pytest.fixture(scope="module")
def fuzz_config(tmp_path_factory):
    p = tmp_path_factory.mktemp("fuzzcfg") / "fuzz.yaml"
    p.write_text(CONFIG)
    return config.load(p)


def _write(rows: list[list[str]], header: list[str], blanks: set[int], eol: str = "\n",
           quoting: int = csv.QUOTE_MINIMAL) -> tuple[bytes, list[int]]:
    """CSV bytes, blank lines before the records in ``blanks``; the start line (by line feeds) of each record."""
    out, starts, line = io.StringIO(), [], 2
    w = csv.writer(out, lineterminator=eol, quoting=quoting)
    w.writerow(header)
    for i, r in enumerate(rows):
        if i in blanks:
            out.write(eol)
            line += 1
        buf = io.StringIO()
        csv.writer(buf, lineterminator=eol, quoting=quoting).writerow(r)
        text = buf.getvalue()
        starts.append(line)
        line += text.count("\n")
        out.write(text)
    return out.getvalue().encode("utf-8"), starts


def _oracle(data: bytes) -> list[int] | None:
    """Start lines of the records of ``data`` by a strict CSV parse (None if it is not valid CSV)."""
    try:
        text = data.decode("utf-8")
        r = csv.reader(io.StringIO(text, newline="\n"), strict=True)
        next(r)
        starts, prev = [], r.line_num
        for rec in r:
            s, prev = prev + 1, r.line_num
            if rec:
                starts.append(s)
        return starts
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None


cells = st.text(alphabet=st.sampled_from(list("ab,;\"|\n\r\t 0123456789.-é") + ["\x00", "\x1b", "ü"]),
                min_size=0, max_size=6)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure shows its example as drawn
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(corrupt=st.dictionaries(st.integers(0, N_ROWS - 1), st.sampled_from(sorted(BAD)), max_size=6),
       noise=st.dictionaries(st.integers(0, N_ROWS - 1), st.tuples(st.sampled_from(sorted(BAD)), cells), max_size=4),
       breaks=st.sets(st.integers(0, N_ROWS - 1), max_size=6),
       blanks=st.sets(st.integers(1, N_ROWS - 1), max_size=4),
       splice=st.one_of(st.none(), st.tuples(st.floats(0.05, 1.0), st.binary(min_size=1, max_size=3))),
       eol=st.sampled_from(["\n", "\r\n"]), quote_all=st.booleans())
def test_fuzzed_files_keep_the_invariants(base, fuzz_config, duckdb_con, tmp_path_factory, corrupt, noise, breaks, blanks,
                                          splice, eol, quote_all):
    STATS["examples"] += 1
    t = base.copy()
    planted = set()
    for i, col in corrupt.items():
        t.loc[i, col] = BAD[col]
        planted.add(t.loc[i, "user_id"])
    noisy = set()
    for i, (col, text) in noise.items():
        if i not in corrupt:
            t.loc[i, col] = text  # random text: may or may not be valid
            noisy.add(t.loc[i, "user_id"])
    for i in breaks:
        t.loc[i, "note"] = "line one\nline two"  # a quoted line break in a kept text column (valid)
    header = list(t.columns)
    data, starts = _write(t.values.tolist(), header, blanks, eol, csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    # a carriage return in a value that the writer left unquoted (line feed endings, minimal quoting)
    bare_cr = eol == "\n" and not quote_all and any("\r" in text and "\n" not in text and '"' not in text
                                                    and "," not in text for _, text in noise.values())
    ids = t["user_id"].tolist()
    if splice is not None:
        at, junk = splice
        pos = min(len(data) - 1, max(len(header[0]) + 60, int(len(data) * at)))
        data = data[:pos] + junk + data[pos:]
        STATS["spliced"] += 1
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.csv"
    path.write_bytes(data)
    try:
        r = ingest_table(path, con=duckdb_con, config=fuzz_config)
    except IngestError as e:
        assert "fuzz.csv" in str(e) or "fuzz" in str(e)
        STATS["ingest_error"] += 1
        if splice is None:  # a file the generator wrote cleanly may only fail when no row survives
            assert "no row was accepted" in str(e) or (bare_cr and "carriage return" in str(e)), str(e)
        return
    except Exception:  # noqa: BLE001 - the property: nothing but IngestError
        STATS["unexplained"] += 1
        raise
    q = r.quarantine["fuzz.csv"]
    n_in = r.report["n_input"]
    if splice is None:
        assert n_in == N_ROWS
        assert len(r.data) + len(q) == n_in
        line_of = {}
        for uid, s in zip(ids, starts):
            line_of.setdefault(uid, set()).add(s)
        for uid, line in zip(q["user_id"], q["_line"].astype(int)):
            if line not in line_of.get(uid, set()):
                STATS["line_mismatch"] += 1
                raise AssertionError(f"{uid!r} reported on line {line}, written on {line_of.get(uid)}")
        rejected_ids = set(q["user_id"])
        assert planted <= rejected_ids, planted - rejected_ids
        untouched = set(ids) - planted - noisy
        dup = {u for u, n in Counter(ids).items() if n > 1}
        assert not (untouched - dup) & rejected_ids, (untouched - dup) & rejected_ids
        STATS["checked_rows"] += n_in
    else:
        oracle = _oracle(data)
        assert oracle is not None  # the file parsed, so it is valid CSV
        assert n_in == len(oracle) and len(r.data) + len(q) == n_in
        assert set(q["_line"].astype(int)) <= set(oracle)
        STATS["checked_rows"] += n_in
    STATS["quarantined"] += len(q)


def test_fuzz_figures():
    """Runs after the fuzz (file order): prints the figures, and checks that it exercised every branch."""
    print("\ningestion fuzz:", dict(STATS))
    if STATS["examples"]:
        assert STATS["unexplained"] == 0 and STATS["line_mismatch"] == 0
        assert STATS["spliced"] > 0 and STATS["quarantined"] > 0


def test_fuzz_base_is_valid(base, fuzz_config, duckdb_con, tmp_path):
    """The unfuzzed file is accepted whole (so every rejection in the fuzz comes from a planted change)."""
    base.to_csv(tmp_path / "clean.csv", index=False)
    r = ingest_table(tmp_path / "clean.csv", con=duckdb_con, config=fuzz_config)
    assert r.n_rejected == 0 and len(r.data) == N_ROWS and r.report["extension_columns"] == ["note"]
