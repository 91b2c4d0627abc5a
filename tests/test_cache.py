"""titlecat.cache: ``tokenize_file`` and its on-disk cache -- a hit skips reading the file, any
change of file or token settings misses, a damaged entry is rebuilt, an unwritable cache is no error."""

from __future__ import annotations

import pytest
from conftest import assert_corpus_equal, records, tiny_rows

import titlecat.cache as cache
from titlecat.cache import tokenize_file
from titlecat.config import DataConfig, TextConfig
from titlecat.tokenizer import tokenize_records


@pytest.fixture
def count_reads(monkeypatch):
    """Counts calls of ``read_records`` made by titlecat.cache."""
    calls = []
    real = cache.read_records

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "read_records", counting)
    return calls


def test_tokenize_file_equals_tokenize_records(tiny_train_file):
    corpus = tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=False)
    assert_corpus_equal(corpus, tokenize_records(records(tiny_rows()), TextConfig()))


def test_cache_hit_skips_reading(tiny_train_file, count_reads, tmp_path):
    a = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    assert len(count_reads) == 1
    cached = list((tmp_path / "cache").glob("*.npz"))  # TITLECAT_CACHE, set by conftest
    assert len(cached) == 1
    b = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    assert len(count_reads) == 1
    assert_corpus_equal(a, b)
    assert b.token_types.dtype == a.token_types.dtype and b.offsets.dtype == a.offsets.dtype


def test_cache_dir_argument(tiny_train_file, count_reads, tmp_path):
    tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=tmp_path / "elsewhere")
    tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=tmp_path / "elsewhere")
    assert len(count_reads) == 1
    assert len(list((tmp_path / "elsewhere").glob("*.npz"))) == 1
    tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=False)
    tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=False)
    assert len(count_reads) == 3


@pytest.mark.parametrize(
    "text_cfg, data_cfg, labelled",
    [
        (TextConfig(fold_accents=False), DataConfig(), True),
        (TextConfig(split_units=False), DataConfig(), True),
        (TextConfig(max_tokens=3), DataConfig(), True),
        (TextConfig(), DataConfig(label_quality="reliable"), True),
        (TextConfig(), DataConfig(skip_bad_rows=True), True),
        (TextConfig(), DataConfig(), False),
    ],
)
def test_changed_settings_miss_the_cache(tiny_train_file, count_reads, text_cfg, data_cfg, labelled):
    base = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    other = tokenize_file(tiny_train_file, text_cfg, data_cfg, labelled=labelled)
    assert len(count_reads) == 2
    assert_corpus_equal(other, tokenize_file(tiny_train_file, text_cfg, data_cfg, labelled=labelled, cache_dir=False))
    if text_cfg.fold_accents is False:
        assert "cámara" in other.types and "cámara" not in base.types


def test_settings_that_do_not_change_tokens_share_the_cache(tiny_train_file, count_reads):
    tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    tokenize_file(tiny_train_file, TextConfig(min_count=2, buckets=1000), DataConfig(val_fraction=0.2, split_seed=1))
    assert len(count_reads) == 1


def test_changed_file_content_misses_the_cache(tmp_path, write_jsonl, count_reads):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, tiny_rows())
    a = tokenize_file(path, TextConfig(), DataConfig())
    write_jsonl(path, tiny_rows()[:-1] + [{**tiny_rows()[-1], "title": "Cámara Nueva Distinta"}])
    b = tokenize_file(path, TextConfig(), DataConfig())
    assert len(count_reads) == 2
    assert "distinta" in b.types and "distinta" not in a.types


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b"",  # empty
        lambda b: b"not an npz file at all",
        lambda b: b[:10] + bytes(len(b) - 10),  # zeroed after the zip magic
        lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1 :],  # one byte flipped
    ],
    ids=["truncated", "empty", "garbage", "zeroed", "flipped"],
)
def test_corrupted_cache_is_rebuilt(tiny_train_file, count_reads, tmp_path, damage):
    a = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    (cached,) = (tmp_path / "cache").glob("*.npz")
    cached.write_bytes(damage(cached.read_bytes()))
    b = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    assert len(count_reads) == 2
    assert_corpus_equal(a, b)
    c = tokenize_file(tiny_train_file, TextConfig(), DataConfig())  # and the rebuilt entry is good again
    assert len(count_reads) == 2
    assert_corpus_equal(a, c)


def test_every_single_byte_flip_of_the_cache_is_rebuilt_or_harmless(tiny_train_file, tmp_path):
    good = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    (cached,) = (tmp_path / "cache").glob("*.npz")
    data = cached.read_bytes()
    # a sample of the whole file, and all of the last central-directory entry and end record
    positions = sorted(set(range(0, len(data), 211)) | set(range(data.rfind(b"PK\x01\x02", 0), len(data))))
    for i in positions:
        cached.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
        assert_corpus_equal(tokenize_file(tiny_train_file, TextConfig(), DataConfig()), good)


def test_skipped_rows_are_counted_and_cached(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl", tiny_rows()[:3] + ["not json", '{"title": ""}'])
    a = tokenize_file(path, TextConfig(), DataConfig(skip_bad_rows=True))
    b = tokenize_file(path, TextConfig(), DataConfig(skip_bad_rows=True))
    assert len(a) == 3 and a.skipped == 2 and b.skipped == 2


def test_unwritable_cache_is_not_an_error(tiny_train_file, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the cache folder should be")
    corpus = tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=blocker / "cache")
    assert len(corpus) == len(tiny_rows())
