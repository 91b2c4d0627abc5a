"""Property-based tests (hypothesis) of normalisation, tokenization and the file readers:
rows of arbitrary text round-trip through a file and ``read_records``, and arbitrary bytes
in a data file give rows or a ``DataError``, never another exception.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from titlecat.data import DataError, ReadStats, read_records
from titlecat.text import normalize, tokenize

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FILES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# text as sellers (and broken exports) write it: any character but lone surrogates, which no
# UTF-8 file can hold, biased towards accents, digits, units and separators
_chars = st.one_of(st.characters(blacklist_categories=("Cs",)),
                   st.sampled_from(list("aeiouáéíóúÁÉñÑüçãõ0123456789.,_-/ \t\"'") + ["cc", "kg", "２", "ﬁ", "İ"]))
text = st.lists(_chars, max_size=30).map("".join)
title = text.filter(lambda t: t.strip() != "")
category = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ_"), min_size=1, max_size=12)
optional = st.one_of(st.none(), st.sampled_from(["spanish", "portuguese", "reliable", "unreliable", ""]))

# ---- normalisation ------------------------------------------------------------------------------


@PROPS
@given(t=text, fold=st.booleans())
def test_normalize_is_idempotent(t, fold):
    once = normalize(t, fold)
    assert normalize(once, fold) == once


@PROPS
@given(t=text)
def test_folding_leaves_no_combining_accents(t):
    assert not any(0x300 <= ord(ch) <= 0x36F for ch in normalize(t, fold_accents=True))


@PROPS
@given(t=text, fold=st.booleans())
def test_composed_and_decomposed_accents_normalise_alike(t, fold):
    assert normalize(unicodedata.normalize("NFC", t), fold) == normalize(unicodedata.normalize("NFD", t), fold)


@PROPS
@given(t=st.text(st.characters(max_codepoint=127)))
def test_ascii_is_only_lowercased(t):
    assert normalize(t) == normalize(t, fold_accents=False) == t.lower()


# ---- tokenization -------------------------------------------------------------------------------


@PROPS
@given(t=text, fold=st.booleans(), split=st.booleans())
def test_tokens_of_a_normalised_title_are_the_same(t, fold, split):
    assert tokenize(normalize(t, fold), fold, split) == tokenize(t, fold, split)


@PROPS
@given(t=text, k=st.integers(0, 10))
def test_max_tokens_keeps_a_prefix(t, k):
    assert tokenize(t, max_tokens=k) == tokenize(t)[:k]


@PROPS
@given(words=st.lists(st.text(st.sampled_from("abcxyz0123456789áñ"), min_size=1, max_size=8), max_size=8),
       seps=st.lists(st.sampled_from([" ", "  ", " - ", " / ", "\t", ", "]), min_size=8, max_size=8))
def test_separators_do_not_change_tokens(words, seps):
    """Words glued by any separators give the same tokens as words glued by single spaces."""
    glued = "".join(w + s for w, s in zip(words, seps))
    assert tokenize(glued) == tokenize(" ".join(words))


# ---- readers: round trips -----------------------------------------------------------------------

rows = st.lists(st.fixed_dictionaries(
    {"title": title, "category": category},
    optional={"language": optional, "label_quality": optional,
              "extra": st.one_of(st.integers(), st.lists(st.integers(), max_size=3), text)}), min_size=1, max_size=8)


def _expected(rows: list[dict]) -> list[tuple]:
    return [(r["title"], r["category"], r.get("language") or None, r.get("label_quality") or None, i)
            for i, r in enumerate(rows, start=1)]


def _read(path: Path) -> list[tuple]:
    return [(r.title, r.category, r.language, r.label_quality, r.line) for r in read_records(path)]


@FILES
@given(rs=rows, gz=st.booleans(), ascii_only=st.booleans())
def test_rows_round_trip_through_jsonl(tmp_path, rs, gz, ascii_only):
    data = "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in rs).encode("utf-8")
    path = tmp_path / ("rows.jsonl.gz" if gz else "rows.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    assert _read(path) == _expected(rs)


@FILES
@given(rs=rows, gz=st.booleans())
def test_rows_round_trip_through_csv(tmp_path, rs, gz):
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["title", "label_quality", "language", "category"])
    for r in rs:
        w.writerow([r["title"], r.get("label_quality") or "", r.get("language") or "", r["category"]])
    data = buf.getvalue().encode("utf-8")
    path = tmp_path / ("rows.csv.gz" if gz else "rows.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    got = _read(path)
    assert [g[:4] for g in got] == [e[:4] for e in _expected(rs)]
    assert all(later > earlier for (*_, earlier), (*_, later) in zip(got, got[1:]))  # line numbers go forward


# ---- readers: arbitrary bytes -------------------------------------------------------------------

_junk = st.one_of(st.binary(max_size=300),
                  # mostly-valid files with damage: the interesting cases
                  st.lists(st.sampled_from([b'{"title": "Casco", "category": "A"}', b'title,category', b'\xff\xfe',
                                            b'"unclosed,', b"\x00", b"{", b"[1]", b'{"title": ""}', b"\r", b","]),
                           max_size=12).map(b"\n".join))


@FILES
@given(data=_junk, name=st.sampled_from(["f.jsonl", "f.csv", "f.jsonl.gz", "f.csv.gz"]),
       compress=st.booleans(), skip=st.booleans(), labelled=st.booleans())
def test_arbitrary_bytes_give_rows_or_a_data_error(tmp_path, data, name, compress, skip, labelled):
    assume(compress or not name.endswith(".gz") or data)  # (raw bytes named .gz: damaged gzip, also covered)
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if compress and name.endswith(".gz") else data)
    stats = ReadStats()
    try:
        recs = list(read_records(path, skip_bad_rows=skip, labelled=labelled, stats=stats))
    except DataError as e:
        assert str(e).startswith(str(path)), e  # every error names the file
        return
    assert recs and all(r.title.strip() for r in recs)
    assert stats.kept == len(recs)
    if labelled:
        assert all(r.category for r in recs)


def test_an_unclosed_csv_quote_is_a_data_error_not_a_csv_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('title,label_quality,language,category\nCasco,reliable,spanish,A\n"unclosed,' + "x" * 200_000)
    with pytest.raises(DataError, match=r"t\.csv:3: not readable as CSV \(field larger than field limit"):
        list(read_records(path))
