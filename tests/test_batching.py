"""titlecat.batching: ``collate`` (token dropout included), ``drop_tokens``, ``BatchLoader`` and
``unique_inverse``."""

import dataclasses

import numpy as np
import pytest
import torch
from test_network import LABELS, LONG, TITLES, encoded, make

from titlecat.batching import BatchLoader, collate, drop_tokens, unique_inverse
from titlecat.tokenizer import tokenize_titles
from titlecat.models import networks


def test_drop_tokens_drops_at_the_rate_and_never_empties_a_title():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 12, 5000)
    tok = np.arange(lengths.sum()) * 3  # any ascending token indices
    kept, new_lengths = drop_tokens(tok, lengths, 0.3, np.random.default_rng(1))
    assert new_lengths.sum() == len(kept) and np.all(np.diff(kept) > 0) and np.isin(kept, tok).all()
    assert np.all(new_lengths <= lengths)
    assert np.all((new_lengths == 0) == (lengths == 0))  # only titles that were empty are empty
    assert np.all(new_lengths[lengths == 1] == 1)  # a one-word title keeps its word
    long = lengths >= 8
    assert abs(1 - new_lengths[long].sum() / lengths[long].sum() - 0.3) < 0.02


@pytest.mark.parametrize("name", sorted(networks()))
def test_a_token_dropped_batch_is_the_batch_of_the_shortened_titles(name):
    """Token dropout leaves words out as if the titles had been written without them: a model's
    logits (bigrams included) equal those of the shortened titles, encoded from scratch."""
    # plain lower-case words, so that a title's tokens are its words
    titles = ["zapatillas nike air max talle", "casco moto integral rapid talle", "celular samsung galaxy negro",
              "camara reflex canon eos rebel kit", "zapatillas adidas superstar blancas mujer", "iphone",
              " ".join(["kit repuesto motor completo moto honda cilindro piston aros juntas valvulas"] * 2), ""]
    feat, data = encoded(titles)
    model, _ = make(name, feat)
    model.eval()
    idx = np.arange(len(data))
    words = [t.split() for t in titles]
    flat = np.array([w for ws in words for w in ws])
    owner = np.repeat(np.arange(len(titles)), [len(ws) for ws in words])
    assert len(flat) == len(data.token_types)
    for seed in range(3):
        dropped = collate(data, idx, 0.4, np.random.default_rng(seed))
        lengths = data.offsets[1:] - data.offsets[:-1]
        kept, _ = drop_tokens(np.arange(len(flat)), lengths, 0.4, np.random.default_rng(seed))
        short = [" ".join(flat[kept[owner[kept] == i]]) for i in range(len(titles))]
        assert short != titles and all(s for s, t in zip(short, titles) if t)
        short_data = feat.encode(tokenize_titles(short, feat.cfg))
        with torch.no_grad():
            torch.testing.assert_close(model(dropped), model(collate(short_data, idx)), rtol=1e-5, atol=1e-5)


def test_token_dropout_zero_changes_nothing():
    feat, data = encoded(TITLES + [LONG, ""], np.r_[LABELS, 0, 1])
    idx = np.array([9, 3, 0, 8])
    a, b = collate(data, idx), collate(data, idx, 0.0, np.random.default_rng(0))
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert (x is None and y is None) or torch.equal(x, y), f.name


def test_batch_loader_is_seeded_and_covers_every_row():
    feat, data = encoded(TITLES * 10, np.tile(LABELS, 10))
    a = BatchLoader(data, 7, shuffle=True, seed=3)
    b = BatchLoader(data, 7, shuffle=True, seed=3)
    ia = [idx.tolist() for idx in a.batch_indices(0)]
    assert ia == [idx.tolist() for idx in b.batch_indices(0)]
    assert ia != [idx.tolist() for idx in a.batch_indices(1)]  # reshuffled every epoch
    assert sorted(sum(ia, [])) == list(range(len(data)))
    assert max(len(i) for i in ia) == 7


@pytest.mark.parametrize("n, upper", [(0, 10), (1, 5), (50, 60), (5000, 200), (10, 10_000), (40, 0)])
def test_unique_inverse_is_np_unique(n, upper):
    """The presence-table path (upper <= 32 n) and the sorting one give np.unique's answer."""
    values = np.random.default_rng(n).integers(0, max(upper, 7), n)
    distinct, inverse = unique_inverse(values, upper if upper else 0)
    want, want_inverse = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(distinct, want)
    np.testing.assert_array_equal(inverse, want_inverse)
    np.testing.assert_array_equal(distinct[inverse], values)


def test_batches_are_the_same_whether_ngram_ids_are_sorted_or_tabled():
    """Encoded.ngram_buckets only lets batching skip a sort: every tensor of a batch is unchanged."""
    feat, data = encoded(TITLES * 5 + [LONG, "", "x"], np.r_[np.tile(LABELS, 5), 0, 1, 2])
    assert data.ngram_buckets == feat.cfg.buckets
    unknown = dataclasses.replace(data, ngram_buckets=0)  # not known: np.unique's sort
    for idx in (np.arange(len(data)), np.array([3, 41, 42, 0, 17]), np.array([40])):
        a, b = collate(data, idx), collate(unknown, idx)
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert (x is None and y is None) or torch.equal(x, y), f.name
