"""titlecat.vocab: Vocabulary and LabelEncoder (scikit-learn style, JSON round trip)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_rows

from titlecat.vocab import PAD, PAD_TOKEN, UNK, UNK_TOKEN, LabelEncoder, NotFittedError, Vocabulary

COUNTS = {"casco": 5, "moto": 5, "celular": 3, "camara": 2, "nike": 1, "zapatillas": 4}


def test_pad_and_unk_come_first():
    v = Vocabulary().fit(COUNTS)
    assert (PAD, UNK) == (0, 1)
    assert v.words_[:2] == [PAD_TOKEN, UNK_TOKEN]
    assert len(v) == len(COUNTS) + 2


def test_fit_returns_self_and_init_only_stores_settings():
    v = Vocabulary(min_count=2, max_size=10)
    assert not hasattr(v, "words_")
    assert v.fit(COUNTS) is v


def test_words_ordered_by_frequency_then_alphabetically():
    v = Vocabulary().fit(COUNTS)
    assert v.words_[2:] == ["casco", "moto", "zapatillas", "celular", "camara", "nike"]


def test_order_does_not_depend_on_input_order():
    reversed_counts = dict(reversed(list(COUNTS.items())))
    assert Vocabulary().fit(reversed_counts).words_ == Vocabulary().fit(COUNTS).words_


def test_min_count():
    v = Vocabulary(min_count=3).fit(COUNTS)
    assert v.words_[2:] == ["casco", "moto", "zapatillas", "celular"]


def test_max_size_counts_pad_and_unk():
    v = Vocabulary(max_size=4).fit(COUNTS)
    assert v.words_ == [PAD_TOKEN, UNK_TOKEN, "casco", "moto"]
    assert len(Vocabulary(max_size=100).fit(COUNTS)) == len(COUNTS) + 2


def test_lookup_unknown_words_get_unk():
    v = Vocabulary(min_count=2).fit(COUNTS)
    ids = v.lookup(["casco", "nike", "desconocida", "moto"])
    assert ids.dtype == np.int64
    assert ids.tolist() == [v.index_["casco"], UNK, UNK, v.index_["moto"]]
    assert v.lookup([]).tolist() == []


def test_lookup_is_the_inverse_of_words():
    v = Vocabulary().fit(COUNTS)
    assert v.lookup(v.words_[2:]).tolist() == list(range(2, len(v)))


def test_not_fitted():
    v = Vocabulary()
    for call in (lambda: v.lookup(["casco"]), lambda: len(v), v.to_dict):
        with pytest.raises(NotFittedError, match="fit"):
            call()


def test_vocabulary_json_round_trip():
    v = Vocabulary(min_count=2, max_size=5).fit(COUNTS)
    d = json.loads(json.dumps(v.to_dict()))
    w = Vocabulary.from_dict(d)
    assert (w.min_count, w.max_size, w.words_) == (v.min_count, v.max_size, v.words_)
    words = ["casco", "nike", "moto", "zzz"]
    assert w.lookup(words).tolist() == v.lookup(words).tolist()


def test_from_dict_rejects_a_vocabulary_without_pad_and_unk():
    with pytest.raises(ValueError, match="<pad>, <unk>"):
        Vocabulary.from_dict({"min_count": 1, "max_size": None, "words": ["casco", "moto"]})


# ---- LabelEncoder --------------------------------------------------------------------


def test_label_encoder_sorted_classes():
    cats = [r["category"] for r in tiny_rows()]
    enc = LabelEncoder().fit(cats)
    assert enc.classes_ == ["CELL_PHONES", "DIGITAL_CAMERAS", "MOTORCYCLE_HELMETS", "SNEAKERS"]
    assert len(enc) == 4
    assert enc.transform(["SNEAKERS", "CELL_PHONES"]).tolist() == [3, 0]


def test_label_encoder_unknown_category():
    enc = LabelEncoder().fit(["B", "A", "B"])
    assert enc.transform(["A", "Z", "B"]).tolist() == [0, -1, 1]
    assert enc.transform(["Z"], unknown=99).tolist() == [99]


def test_label_encoder_inverse():
    cats = ["SNEAKERS", "CELL_PHONES", "SNEAKERS", "DIGITAL_CAMERAS"]
    enc = LabelEncoder().fit(cats)
    assert enc.inverse_transform(enc.transform(cats)) == cats
    assert enc.inverse_transform(np.array([1, 0])) == ["DIGITAL_CAMERAS", "CELL_PHONES"]


def test_label_encoder_inverse_rejects_unknown_and_out_of_range():
    enc = LabelEncoder().fit(["A", "B"])
    for bad in (-1, 2):
        with pytest.raises(ValueError, match=f"class index {bad} "):
            enc.inverse_transform([0, bad])


def test_label_encoder_round_trip():
    enc = LabelEncoder().fit(["SNEAKERS", "CELL_PHONES", "DIGITAL_CAMERAS"])
    back = LabelEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert back.classes_ == enc.classes_
    assert back.transform(["SNEAKERS", "X"]).tolist() == enc.transform(["SNEAKERS", "X"]).tolist()


def test_label_encoder_needs_categories():
    with pytest.raises(ValueError, match="no categories"):
        LabelEncoder().fit([])
