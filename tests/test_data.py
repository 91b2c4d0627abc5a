"""titlecat.data: reading JSON lines and CSV files, bad rows, filters, the stratified split."""

from __future__ import annotations

import gzip
import re
from collections import Counter

import numpy as np
import pytest
from conftest import _write_csv, tiny_rows

from titlecat.data import DataError, ReadStats, iter_chunks, read_records, stratified_split

TRAIN_HEADER = ["title", "label_quality", "language", "category"]  # the challenge's train.csv
TEST_HEADER = ["id", "title", "language"]  # the challenge's test.csv

GOOD = {"title": "Casco Moto Integral", "category": "MOTORCYCLE_HELMETS",
        "language": "spanish", "label_quality": "reliable"}
GOOD2 = {"title": "Celular Samsung A10", "category": "CELL_PHONES", "language": "spanish", "label_quality": "reliable"}


def read(path, **kw):
    return list(read_records(path, **kw))


def raises_at(path, line: int | None, match: str):
    """``pytest.raises(DataError)`` whose message names ``path`` (and ``path:line`` when given)."""
    where = f"{path}:{line}:" if line is not None else f"{path}"
    return pytest.raises(DataError, match=re.escape(where) + ".*" + match)


# ---- good files ----------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_jsonl(tmp_path, write_jsonl, gz):
    rows = tiny_rows()
    path = write_jsonl(tmp_path / ("t.jsonl.gz" if gz else "t.jsonl"), rows, gz=gz)
    stats = ReadStats()
    recs = list(read_records(path, stats=stats))
    assert [r.title for r in recs] == [r["title"] for r in rows]
    assert [r.category for r in recs] == [r["category"] for r in rows]
    assert [r.language for r in recs] == ["spanish"] * len(rows)
    assert [r.label_quality for r in recs] == [r["label_quality"] for r in rows]
    assert [r.line for r in recs] == list(range(1, len(rows) + 1))
    assert all(r.id is None for r in recs)
    assert (stats.kept, stats.filtered, stats.skipped) == (len(rows), 0, 0)
    assert stats.path == str(path)


def test_read_jsonl_ignores_other_keys_and_blank_lines(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl", [{**GOOD, "tokenized_title": ["casco"], "target": 3}, "", "   ", GOOD2])
    recs = read(path)
    assert [r.title for r in recs] == [GOOD["title"], GOOD2["title"]]
    assert [r.line for r in recs] == [1, 4]


def test_read_jsonl_unlabelled(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl", [{"title": "Casco Moto", "id": 7}])
    (rec,) = read(path, labelled=False)
    assert rec.category is None and rec.id == "7" and rec.title == "Casco Moto"


@pytest.mark.parametrize("gz", [False, True])
def test_read_challenge_train_csv(tmp_path, write_csv, gz):
    rows = tiny_rows()
    path = write_csv(tmp_path / ("train.csv.gz" if gz else "train.csv"), TRAIN_HEADER, rows, gz=gz)
    recs = read(path)
    assert [(r.title, r.category, r.language, r.label_quality) for r in recs] == [
        (r["title"], r["category"], r["language"], r["label_quality"]) for r in rows
    ]
    assert [r.line for r in recs] == list(range(2, len(rows) + 2))  # line 1 is the header


def test_read_challenge_test_csv(tmp_path, write_csv):
    path = write_csv(
        tmp_path / "test.csv",
        TEST_HEADER,
        [[0, "Kit Maternidade Bolsa-mala Baby", "portuguese"], [1, "Casco Moto Integral, Negro", "spanish"]],
    )
    recs = read(path, labelled=False)
    assert [(r.id, r.title, r.language, r.category) for r in recs] == [
        ("0", "Kit Maternidade Bolsa-mala Baby", "portuguese", None),
        ("1", "Casco Moto Integral, Negro", "spanish", None),
    ]


def test_original_train_format_and_empty_titles(bilingual, tmp_path):
    recs = list(read_records(bilingual / "train.csv"))
    assert {r.language for r in recs} == {"spanish", "portuguese"}
    assert {r.label_quality for r in recs} == {"reliable", "unreliable"}
    path = _write_csv(tmp_path / "t.csv", TEST_HEADER, [["7", "  ", "spanish"]])
    with pytest.raises(DataError, match="empty title"):
        list(read_records(path, labelled=False))
    (rec,) = read_records(path, labelled=False, allow_empty_title=True)
    assert rec.id == "7" and rec.title == "  "


def test_csv_line_numbers_count_quoted_newlines(tmp_path, write_csv):
    rows = [["Casco\nMoto", "reliable", "spanish", "A"], ["", "reliable", "spanish", "B"]]
    path = write_csv(tmp_path / "t.csv", TRAIN_HEADER, rows)
    with raises_at(path, 4, "empty title"):  # header=1, first row spans lines 2-3
        read(path)


def test_read_very_long_title(tmp_path, write_jsonl):
    title = ("casco moto " * 1000)[:10_000]
    assert len(title) == 10_000
    path = write_jsonl(tmp_path / "t.jsonl", [{**GOOD, "title": title}])
    (rec,) = read(path)
    assert rec.title == title


def test_title_with_escaped_newline_and_unicode(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl", [{**GOOD, "title": "Cámara\nÑandú 🙂"}])
    assert read(path)[0].title == "Cámara\nÑandú 🙂"


# ---- bad input: every error names the file (and the line, for a row) --------------


BAD_JSONL_ROWS = [
    ('{"title": "Casco", "category": ', "malformed JSON"),
    ("[1, 2, 3]", "expected a JSON object, got list"),
    ('"just a string"', "expected a JSON object, got str"),
    ('{"category": "A"}', "missing title"),
    ('{"title": "", "category": "A"}', "empty title"),
    ('{"title": "   ", "category": "A"}', "empty title"),
    ('{"title": 12, "category": "A"}', "title is int"),
    ('{"title": "Casco Moto"}', "missing category"),
    ('{"title": "Casco Moto", "category": ""}', "missing category"),
    ('{"title": "Casco Moto", "category": 3}', "category is int"),
    (b'{"title": "Casco \xff Moto", "category": "A"}', "not UTF-8"),
    ('{"title": "Casco Moto", "category": "A", "language": 5}', "language is int, not text"),
    ('{"title": "Casco Moto", "category": "A", "label_quality": ["reliable"]}', "label_quality is list, not text"),
]


@pytest.mark.parametrize("bad, problem", BAD_JSONL_ROWS)
def test_bad_jsonl_row_names_file_and_line(tmp_path, write_jsonl, bad, problem):
    path = write_jsonl(tmp_path / "t.jsonl", [GOOD, GOOD2, bad, GOOD])
    with raises_at(path, 3, problem):
        read(path)


@pytest.mark.parametrize("bad, problem", BAD_JSONL_ROWS)
def test_bad_jsonl_row_in_gzip_names_file_and_line(tmp_path, write_jsonl, bad, problem):
    path = write_jsonl(tmp_path / "t.jsonl.gz", [GOOD, bad], gz=True)
    with raises_at(path, 2, problem):
        read(path)


def test_skip_bad_rows_keeps_the_good_ones(tmp_path, write_jsonl):
    rows = [GOOD]
    for bad, _ in BAD_JSONL_ROWS:
        rows += [bad, GOOD2]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    stats = ReadStats()
    recs = list(read_records(path, skip_bad_rows=True, stats=stats))
    assert [r.title for r in recs] == [GOOD["title"]] + [GOOD2["title"]] * len(BAD_JSONL_ROWS)
    assert [r.line for r in recs] == [1] + list(range(3, 2 * len(BAD_JSONL_ROWS) + 2, 2))
    assert stats.skipped == len(BAD_JSONL_ROWS)
    assert stats.kept == len(recs)
    assert len(stats.examples) == 5 and stats.examples[0].startswith(f"{path}:2:")


def test_unlabelled_read_accepts_rows_without_category(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl", ['{"title": "Casco Moto"}', '{"title": "Celular", "category": 3}'])
    assert [r.category for r in read(path, labelled=False)] == [None, None]


def test_truncated_gzip(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl.gz", tiny_rows() * 20, gz=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=re.escape(str(path)) + r":\d+: compressed file is damaged or truncated"):
        read(path)
    # a damaged file is not a bad row: skipping cannot repair it
    with pytest.raises(DataError, match="truncated"):
        read(path, skip_bad_rows=True)


def test_not_gzip_despite_the_name(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl.gz", [GOOD], gz=False)
    with raises_at(path, 1, "compressed file is damaged"):
        read(path)


@pytest.mark.parametrize(
    "header",
    [["id", "title", "language"], ["titulo", "label_quality", "language", "category"], ["a", "b"]],
)
def test_csv_with_a_wrong_header(tmp_path, write_csv, header):
    path = write_csv(tmp_path / "t.csv", header, [["x"] * len(header)])
    with raises_at(path, 1, "CSV header"):
        read(path)


def test_csv_test_header_is_fine_unlabelled_but_not_labelled(tmp_path, write_csv):
    path = write_csv(tmp_path / "test.csv", TEST_HEADER, [[0, "Casco", "spanish"]])
    assert len(read(path, labelled=False)) == 1
    with raises_at(path, 1, "lacks category"):
        read(path)


@pytest.mark.parametrize(
    "row, problem",
    [
        (["Casco Moto", "reliable", "spanish"], "expected 4 fields, found 3"),
        (["Casco Moto", "reliable", "spanish", "A", "extra"], "expected 4 fields, found 5"),
        (["", "reliable", "spanish", "A"], "empty title"),
        (["Casco Moto", "reliable", "spanish", ""], "missing category"),
    ],
)
def test_bad_csv_row_names_file_and_line(tmp_path, write_csv, row, problem):
    path = write_csv(tmp_path / "t.csv", TRAIN_HEADER, [["Celular", "reliable", "spanish", "B"], row])
    with raises_at(path, 3, problem):
        read(path)
    stats = ReadStats()
    assert [r.title for r in read_records(path, skip_bad_rows=True, stats=stats)] == ["Celular"]
    assert stats.skipped == 1


def test_csv_undecodable_bytes(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"title,label_quality,language,category\n"
                     b"Casco,reliable,spanish,A\n"
                     b"Cel\xffular,reliable,spanish,B\n")
    with raises_at(path, 3, "not UTF-8 at column 4"):
        read(path)
    stats = ReadStats()
    assert [r.title for r in read_records(path, skip_bad_rows=True, stats=stats)] == ["Casco"]
    assert stats.skipped == 1


@pytest.mark.parametrize("name", ["t.jsonl", "t.csv", "t.jsonl.gz"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"") if name.endswith(".gz") else b"")
    with raises_at(path, None, "no rows"):
        read(path)


def test_only_bad_rows_skipped_is_still_an_error(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl", ["not json", "[1]"])
    with raises_at(path, None, r"no rows left \(0 filtered out, 2 bad rows skipped\)"):
        read(path, skip_bad_rows=True)


def test_a_directory(tmp_path):
    d = tmp_path / "data.jsonl"
    d.mkdir()
    with raises_at(d, None, "is a directory"):
        read(d)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl.gz"
    with raises_at(path, None, "file not found"):
        read(path)


@pytest.mark.parametrize("name", ["t.txt", "t.parquet", "t.gz", "train"])
def test_unknown_extension(tmp_path, name):
    path = tmp_path / name
    path.write_text("title,category\nCasco,A\n")
    with raises_at(path, None, "unknown file type"):
        read(path)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ---- filters ---------------------------------------------------------------------------


def _mixed_rows():
    return [
        {**GOOD, "language": "spanish", "label_quality": "reliable"},
        {**GOOD, "language": "portuguese", "label_quality": "reliable"},
        {**GOOD, "language": "spanish", "label_quality": "unreliable"},
        {**GOOD, "language": "portuguese", "label_quality": "unreliable"},
        {**GOOD, "language": "spanish", "label_quality": "reliable"},
    ]


@pytest.mark.parametrize(
    "language, quality, lines",
    [
        ("all", "all", [1, 2, 3, 4, 5]),
        ("spanish", "all", [1, 3, 5]),
        ("portuguese", "all", [2, 4]),
        ("all", "reliable", [1, 2, 5]),
        ("portuguese", "unreliable", [4]),
    ],
)
def test_language_and_label_quality_filters(tmp_path, write_jsonl, language, quality, lines):
    path = write_jsonl(tmp_path / "t.jsonl", _mixed_rows())
    stats = ReadStats()
    recs = list(read_records(path, language=language, label_quality=quality, stats=stats))
    assert [r.line for r in recs] == lines
    assert (stats.kept, stats.filtered) == (len(lines), 5 - len(lines))


def test_filter_that_keeps_nothing(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl", [GOOD, GOOD2])
    with raises_at(path, None, r"no rows left \(2 filtered out"):
        read(path, language="portuguese")


def test_filters_on_csv(tmp_path, write_csv):
    path = write_csv(tmp_path / "t.csv", TRAIN_HEADER, _mixed_rows())
    assert [r.line for r in read(path, language="spanish", label_quality="reliable")] == [2, 6]


# ---- stratified split ------------------------------------------------------------------


def _labels():
    # category c has 10 * (c + 1) rows (10..50), plus two singleton categories 98, 99
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(10 * (c + 1), c) for c in range(5)] + [np.array([98, 99])])
    return rng.permutation(labels)


def test_stratified_split_partitions_every_row():
    labels = _labels()
    train, val = stratified_split(labels, 0.2, seed=1)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted, no repeats


def test_stratified_split_keeps_each_category_on_both_sides_in_proportion():
    labels = _labels()
    train, val = stratified_split(labels, 0.2, seed=1)
    n_val, n_all = Counter(labels[val].tolist()), Counter(labels.tolist())
    for c in range(5):
        assert n_val[c] == round(0.2 * n_all[c])  # 2, 4, 6, 8, 10
        assert c in set(labels[train].tolist())
    # singletons cannot be on both sides: they stay in training
    assert 98 not in n_val and 99 not in n_val
    assert {98, 99} <= set(labels[train].tolist())


def test_stratified_split_small_categories():
    # two rows: one each side; a small fraction still holds out one row, never all
    labels = np.array([0, 0, 1, 1, 1])
    train, val = stratified_split(labels, 0.01, seed=0)
    assert sorted(labels[val].tolist()) == [0, 1]
    train, val = stratified_split(labels, 0.49, seed=0)
    assert sorted(labels[val].tolist()) == [0, 1]
    assert sorted(labels[train].tolist()) == [0, 1, 1]


def test_stratified_split_is_deterministic_per_seed():
    labels = _labels()
    a = stratified_split(labels, 0.2, seed=7)
    b = stratified_split(labels, 0.2, seed=7)
    c = stratified_split(labels, 0.2, seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert len(a[1]) == len(c[1])


def test_stratified_split_with_category_names():
    labels = np.array(["CELL_PHONES", "SNEAKERS", "CELL_PHONES", "SNEAKERS", "SNEAKERS", "CAMERAS"])
    train, val = stratified_split(labels, 0.4, seed=0)
    assert sorted(labels[val].tolist()) == ["CELL_PHONES", "SNEAKERS"]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(6))


def test_stratified_split_empty():
    train, val = stratified_split(np.array([], dtype=np.int32), 0.1, seed=0)
    assert train.size == 0 and val.size == 0


def test_iter_chunks():
    assert list(iter_chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(iter_chunks([], 3)) == []


# ---- the real data (skipped where it is not present) ------------------------------------


def test_real_spanish_train(real_data):
    path = real_data / "meli2019-es" / "spanish.train.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    stats = ReadStats()
    cats = Counter(r.category for r in read_records(path, stats=stats))
    assert stats.kept == 44_720 and stats.skipped == 0
    assert len(cats) == 632
    assert min(cats.values()) >= 23 and max(cats.values()) <= 104  # as the data README says


def test_real_challenge_test_head(real_data):
    path = real_data / "meli2019-original" / "test.head.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    recs = read(path, labelled=False)
    assert len(recs) == 1000
    assert [r.id for r in recs] == [str(i) for i in range(1000)]
    assert all(r.category is None for r in recs)
    assert Counter(r.language for r in recs) == {"spanish": 497, "portuguese": 503}
    with pytest.raises(DataError, match="lacks category"):
        read(path)
