"""titlecat.cache: ``tokenize_file`` and its on-disk cache -- a hit skips reading the file, any
change of file or token settings misses, a damaged entry is rebuilt, an unwritable cache is no error,
a full disk is one (and leaves nothing behind), the token ids are memory-mapped."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
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


def entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def test_cache_hit_skips_reading(tiny_train_file, count_reads, tmp_path):
    a = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    assert len(count_reads) == 1
    cached = entries(tmp_path / "cache")  # TITLECAT_CACHE, set by conftest
    assert len(cached) == 1 and (cached[0] / "manifest.json").is_file()
    b = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    assert len(count_reads) == 1
    assert_corpus_equal(a, b)
    assert b.token_types.dtype == a.token_types.dtype and b.offsets.dtype == a.offsets.dtype
    # the token ids (and every per-row array) are mapped from the entry, read-only, not copied in
    for arr in (a.token_types, b.token_types, b.offsets, b.category_codes):
        assert isinstance(arr, np.memmap) and not arr.flags.writeable
        assert Path(arr.filename).parent == cached[0]


def test_cached_and_uncached_tokens_are_equal_on_real_titles(tmp_path):
    real = Path(__file__).resolve().parents[2] / "shared" / "data" / "meli2019-es" / "spanish.test.jsonl.gz"
    if not real.is_file():
        pytest.skip("../shared/data is not beside the clone")
    mapped = tokenize_file(real, TextConfig(), DataConfig(), cache_dir=tmp_path / "c")
    assert_corpus_equal(mapped, tokenize_file(real, TextConfig(), DataConfig(), cache_dir=False))
    assert len(mapped) == 9480 and isinstance(mapped.token_types, np.memmap)


def test_cache_dir_argument(tiny_train_file, count_reads, tmp_path):
    tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=tmp_path / "elsewhere")
    tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=tmp_path / "elsewhere")
    assert len(count_reads) == 1
    assert len(entries(tmp_path / "elsewhere")) == 1
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
        lambda b: b"not an entry file at all",
        lambda b: b[:1] + bytes(len(b) - 1),  # zeroed
        lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1 :],  # one byte flipped
    ],
    ids=["truncated", "empty", "garbage", "zeroed", "flipped"],
)
@pytest.mark.parametrize("name", ["manifest.json", "token_types.bin", "offsets.bin", "types.bin"])
def test_corrupted_cache_is_rebuilt(tiny_train_file, count_reads, tmp_path, damage, name):
    tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    # compared with an in-memory corpus: a corpus mapped from the entry would see the damage itself
    a = tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=False)
    (entry,) = entries(tmp_path / "cache")
    (entry / name).write_bytes(damage((entry / name).read_bytes()))
    b = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    assert len(count_reads) == 3
    assert_corpus_equal(a, b)
    c = tokenize_file(tiny_train_file, TextConfig(), DataConfig())  # and the rebuilt entry is good again
    assert len(count_reads) == 3
    assert_corpus_equal(a, c)


def test_every_single_byte_flip_of_the_cache_is_rebuilt_or_harmless(tiny_train_file, tmp_path):
    tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    good = tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=False)
    (entry,) = entries(tmp_path / "cache")
    for name in sorted(p.name for p in entry.iterdir()):
        data = (entry / name).read_bytes()
        for i in range(0, len(data), max(1, len(data) // 40)):
            (entry / name).write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
            assert_corpus_equal(tokenize_file(tiny_train_file, TextConfig(), DataConfig()), good)
            (entry,) = entries(tmp_path / "cache")


def test_a_missing_file_of_an_entry_is_rebuilt(tiny_train_file, count_reads, tmp_path):
    a = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    (entry,) = entries(tmp_path / "cache")
    (entry / "token_types.bin").unlink()  # (a keeps its mapping of the removed file)
    assert_corpus_equal(tokenize_file(tiny_train_file, TextConfig(), DataConfig()), a)
    assert len(count_reads) == 2


def test_a_half_written_entry_is_never_read(tiny_train_file, tmp_path, monkeypatch):
    """An entry is renamed into place only when whole: a run that died while writing one left
    only its temporary folder, which a later run neither reads nor trips over."""
    good = tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=tmp_path / "ok")
    (entry,) = entries(tmp_path / "ok")
    # what a killed run leaves: the temporary folder, token ids written, no manifest
    half = tmp_path / "c" / f"{entry.name}.tmp-dead"
    half.mkdir(parents=True)
    (half / "token_types.bin").write_bytes((entry / "token_types.bin").read_bytes()[:8])
    assert_corpus_equal(tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=tmp_path / "c"), good)

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # interrupted after the tokens, before the manifest

    monkeypatch.setattr(cache, "write_entry", fail)
    with pytest.raises(KeyboardInterrupt):
        tokenize_file(tiny_train_file, TextConfig(fold_accents=False), DataConfig(), cache_dir=tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted([entry.name, half.name])


def test_bad_input_leaves_no_entry(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl", tiny_rows() + ["not json"])
    with pytest.raises(ValueError, match=r"t.jsonl:\d+: malformed JSON"):
        tokenize_file(path, TextConfig(), DataConfig(), cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


def test_full_disk_is_a_clear_error_and_leaves_nothing(tiny_train_file, tmp_path, monkeypatch):
    real = cache.TokenSpool.extend

    def filling(self, values):
        real(self, values[:1])  # some bytes reach the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache.TokenSpool, "extend", filling)
    with pytest.raises(OSError, match="while writing the preprocessing cache") as e:
        tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=tmp_path / "c")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


def test_full_disk_on_a_real_small_filesystem(tmp_path, write_jsonl):
    """A real ENOSPC: the cache on a 64 KB tmpfs (needs root and a kernel that lets us mount;
    skipped elsewhere).  The CLI's message names the cache folder; nothing is left in it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        rows = [{**r, "title": f"{r['title']} modelo x{i}z{i * 7}"} for i in range(3000) for r in tiny_rows()[:1]]
        path = write_jsonl(tmp_path / "big.jsonl", rows)
        with pytest.raises(OSError, match="No space left on device while writing the preprocessing cache"):
            tokenize_file(path, TextConfig(), DataConfig(), cache_dir=mnt / "cache")
        assert list((mnt / "cache").iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


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
