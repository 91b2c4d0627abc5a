"""titlecat.dataset: a run's rows -- the validation split (carved or a file), class indices,
row weights, the rows a refit learns and the fingerprint of validation rows."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CATEGORIES, tiny_rows

from titlecat import dataset
from titlecat.cache import tokenize_file
from titlecat.config import DataConfig, TextConfig
from titlecat.data import DataError
from titlecat.vocab import LabelEncoder


def test_language_aware_split_keeps_every_pair_on_both_sides(bilingual):
    corpus = tokenize_file(bilingual / "train.csv", TextConfig(), DataConfig(), cache_dir=False)
    tr, va = dataset.language_aware_split(corpus, 0.2, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(corpus)

    def pairs(idx):
        return {(corpus.categories[c], corpus.languages[lang])
                for c, lang in zip(corpus.category_codes[idx], corpus.language_codes[idx])}

    assert pairs(tr) == pairs(va) == pairs(np.arange(len(corpus)))  # 4 shared categories x 2 + 2 one-language
    assert len(pairs(va)) == 10


def test_unreliable_weights_mark_the_unreliable_rows(bilingual):
    corpus = tokenize_file(bilingual / "train.csv", TextConfig(), DataConfig(), cache_dir=False)
    w = dataset.unreliable_weights(corpus, 0.25)
    unreliable = np.array([corpus.qualities[q] == "unreliable" for q in corpus.quality_codes])
    assert w.dtype == np.float32 and unreliable.sum() == 24  # every third row of each (category, language)
    assert np.all(w[unreliable] == 0.25) and np.all(w[~unreliable] == 1.0)
    assert dataset.unreliable_weights(corpus, 1.0) is None  # the default: unweighted loss


def test_a_carved_split_is_stratified_disjoint_and_refits_on_the_whole_file(tiny_train_file):
    split = dataset.split_corpus(tiny_train_file, None, TextConfig(), DataConfig(val_fraction=0.2, split_seed=5))
    assert split.carved and len(split.train) + len(split.validation) == len(split.whole) == len(tiny_rows())
    titles = lambda c: {" ".join(c.types[t] for t in c.token_types[a:b])  # noqa: E731
                        for a, b in zip(c.offsets[:-1], c.offsets[1:])}
    assert not titles(split.train) & titles(split.validation)
    per_category = np.bincount(split.validation.category_codes, minlength=len(CATEGORIES))
    assert per_category.tolist() == [2, 2, 2, 2]  # 0.2 of 11 titles in each category
    assert split.refit_rows() is split.whole
    assert "stratified 0.2" in split.description and "seed 5" in split.description
    # the rows depend on the data settings only: other text settings carve the same rows
    other = dataset.split_corpus(tiny_train_file, None, TextConfig(fold_accents=False, max_tokens=3),
                                 DataConfig(val_fraction=0.2, split_seed=5))
    assert np.array_equal(np.minimum(np.diff(split.validation.offsets), 3), np.diff(other.validation.offsets))
    assert other.validation.category_names() == split.validation.category_names()

def test_a_validation_file_is_the_validation_rows_and_a_refit_learns_both(tiny_train_file, tiny_test_file):
    split = dataset.split_corpus(tiny_train_file, tiny_test_file, TextConfig(), DataConfig())
    assert not split.carved and split.train is split.whole and split.description == f"file {tiny_test_file}"
    assert len(split.refit_rows()) == len(split.train) + len(split.validation)


def test_a_file_too_small_to_split_says_so(write_jsonl, tmp_path):
    one_each = write_jsonl(tmp_path / "one.jsonl", [{"title": f"t {c}", "category": c} for c in CATEGORIES])
    with pytest.raises(DataError, match="too few rows per category"):
        dataset.split_corpus(one_each, None, TextConfig(), DataConfig())


def test_labels_unseen_in_training_get_indices_past_the_known_ones(tiny_train_file):
    corpus = tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=False)
    labels = LabelEncoder().fit(["CELL_PHONES", "SNEAKERS"])
    y, unseen = dataset.encode_labels(corpus, labels)
    assert sorted(unseen) == ["DIGITAL_CAMERAS", "MOTORCYCLE_HELMETS"]
    names = corpus.category_names()
    for name, index in zip(names, y.tolist()):
        assert index == (labels.transform([name])[0] if name in labels.classes_ else 2 + unseen.index(name))
    rows = dataset.labelled_rows(corpus, labels, unreliable_weight=0.5)
    assert rows.labels is labels and np.array_equal(rows.y, y) and set(rows.weights.tolist()) == {0.5, 1.0}


def test_the_rows_digest_tells_other_rows_apart(tiny_train_file, tiny_test_file):
    train = tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=False)
    test = tokenize_file(tiny_test_file, TextConfig(), DataConfig(), cache_dir=False)
    y = np.zeros(len(train), dtype=np.int64)
    assert np.array_equal(dataset.rows_digest(train, y), dataset.rows_digest(train, y.copy()))
    assert not np.array_equal(dataset.rows_digest(train, y), dataset.rows_digest(train, y + 1))
    assert not np.array_equal(dataset.rows_digest(train.subset(np.arange(len(test))), y[: len(test)]),
                              dataset.rows_digest(test, y[: len(test)]))


# ---- copies of a title, and categories that differ only by case ---------------------------------


def _titles(c) -> list[str]:
    return [" ".join(c.types[t] for t in c.token_types[a:b]) for a, b in zip(c.offsets[:-1], c.offsets[1:])]


def test_title_keys_are_equal_for_titles_that_tokenize_alike_in_any_file(write_jsonl, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"title": "Zapatillas NIKE  Air", "category": "A"},
                                           {"title": "Air Zapatillas Nike", "category": "A"},
                                           {"title": "Casco", "category": "B"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"title": "Otro título", "category": "B"},
                                           {"title": "zapatillas nike air", "category": "B"}])
    ka = dataset.title_keys(tokenize_file(a, TextConfig(), DataConfig(), cache_dir=False))
    kb = dataset.title_keys(tokenize_file(b, TextConfig(), DataConfig(), cache_dir=False), chunk=1)
    assert ka.dtype == np.uint64 and len(set(ka.tolist())) == 3  # word order counts
    assert kb[1] == ka[0] and kb[0] not in ka  # across files, other type tables: same key
    assert dataset.shared_titles(kb, ka) == 1 and dataset.shared_titles(ka, kb) == 1


def test_a_carved_split_keeps_every_copy_of_a_title_on_one_side(write_jsonl, tmp_path):
    rows = [{"title": f"{c.lower()} modelo {i}", "category": c} for c in CATEGORIES for i in range(30)]
    rows += [{"title": f"{c.lower()} modelo {i}", "category": c} for c in CATEGORIES for i in range(0, 30, 3)] * 2
    path = write_jsonl(tmp_path / "dups.jsonl", rows)
    cfg = DataConfig(val_fraction=0.2, split_seed=1)
    split = dataset.split_corpus(path, None, TextConfig(), cfg)

    assert not set(_titles(split.train)) & set(_titles(split.validation))
    assert split.val_shared == 0 and split.notes == []
    # still stratified: each category keeps about its share (a group moves whole)
    per_category = np.bincount(split.validation.category_codes, minlength=len(CATEGORIES))
    assert all(9 <= n <= 13 for n in per_category), per_category  # 0.2 of 50 rows each
    # without copies the grouped split is the very split made without groups
    corpus = tokenize_file(write_jsonl(tmp_path / "t.jsonl", tiny_rows()), TextConfig(), DataConfig(), cache_dir=False)
    for a, b in zip(dataset.language_aware_split(corpus, 0.2, 5),
                    dataset.language_aware_split(corpus, 0.2, 5, groups=dataset.title_keys(corpus))):
        assert np.array_equal(a, b)


def test_a_category_of_one_repeated_title_stays_in_training(write_jsonl, tmp_path):
    rows = [{"title": "siempre igual", "category": "SAME"}] * 6 + [{"title": f"casco {i}", "category": "B"}
                                                                  for i in range(6)]
    split = dataset.split_corpus(write_jsonl(tmp_path / "t.jsonl", rows), None, TextConfig(), DataConfig())
    assert "SAME" not in split.validation.category_names()
    assert split.train.category_names().count("SAME") == 6


def test_case_variants_of_a_category_are_named_and_merged_on_request(write_jsonl, tmp_path):
    rows = tiny_rows() + [{"title": f"celular {i}", "category": "cell_phones"} for i in range(4)]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    val = write_jsonl(tmp_path / "v.jsonl", [{"title": "celular x", "category": "Cell_Phones"},
                                             {"title": "casco x", "category": "MOTORCYCLE_HELMETS"}])

    kept = dataset.split_corpus(path, None, TextConfig(), DataConfig())
    assert len(kept.whole.categories) == 5
    assert kept.notes[0] == (f"{path}: 2 categories differ from another only by case, and are separate classes: "
                             "'CELL_PHONES' (11 rows) / 'cell_phones' (4 rows); set data.merge_label_variants=true "
                             "to merge each group into its most frequent spelling")

    merged = dataset.split_corpus(path, val, TextConfig(), DataConfig(merge_label_variants=True))
    assert sorted(merged.whole.categories) == sorted(CATEGORIES)
    assert merged.whole.category_names().count("CELL_PHONES") == 15
    assert "merged into their most frequent spelling" in merged.notes[0]
    # the validation file's spelling follows the training rows'
    assert merged.validation.category_names() == ["CELL_PHONES", "MOTORCYCLE_HELMETS"]
