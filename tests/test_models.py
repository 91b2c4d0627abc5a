"""Every registered model: shapes, padding invariance, eval determinism, can overfit a batch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dataclasses

from titlecat.batching import BatchLoader, collate, drop_tokens, unique_inverse
from titlecat.config import Config, TextConfig
from titlecat.featurizer import Featurizer
from titlecat.tokenizer import tokenize_titles
from titlecat.models import build_network, networks

TITLES = [
    "Zapatillas Nike Air Max 90 Talle 42",
    "Casco Moto Integral Ls2 Rapid Talle L",
    "Celular Samsung Galaxy A52 128gb Negro",
    "Camara Reflex Canon Eos Rebel T7 18-55mm Kit",
    "Zapatillas Adidas Superstar Blancas Mujer",
    "Casco Rebatible Hawk 990 Moto Doble Visor",
    "Iphone 11 64gb Libre Impecable",
    "Camara Nikon D3500 Lente 18-55 Vr",
]
LABELS = np.array([0, 1, 2, 3, 0, 1, 2, 3])
LONG = "Kit Repuesto Motor Completo Moto Honda Cg 150 Titan Cilindro Piston Aros Juntas Valvulas Original Garantia Envio"


def encoded(titles, labels=None, text=None):
    text = text or TextConfig(buckets=5000, bigram_buckets=3000)
    corpus = tokenize_titles(titles, text)
    feat = Featurizer(text).fit(corpus)
    return feat, feat.encode(corpus, labels)


def make(name, feat, n_classes=4, **overrides):
    cfg = Config.default(name).with_overrides({"model.embedding_dim": 16, **overrides})
    torch.manual_seed(0)
    return build_network(cfg.model, n_classes=n_classes, **feat.sizes()), cfg


@pytest.mark.parametrize("name", sorted(networks()))
def test_shapes_and_mask(name):
    feat, data = encoded(TITLES + [LONG, "", "🙂🙂"], np.r_[LABELS, 0, 1, 2])
    model, _ = make(name, feat)
    batch = collate(data, np.arange(len(data)))
    x, mask = model.embed(batch)
    assert x.shape == (len(data), batch.max_len, 16)
    assert mask.shape == (len(data), batch.max_len)
    assert mask.sum(1).tolist() == batch.lengths.tolist()
    assert batch.lengths[-1] == 1 and batch.lengths[-2] == 1  # blank / emoji-only get one <unk> token
    assert torch.all(x[~mask] == 0)  # padding positions are zero vectors
    model.eval()
    assert model(batch).shape == (len(data), 4)


@pytest.mark.parametrize("name", sorted(networks()))
def test_padding_does_not_change_logits(name):
    """A title's logits are the same alone and in a batch with much longer titles."""
    feat, data = encoded(TITLES + [LONG, LONG + " " + LONG])
    model, _ = make(name, feat)
    model.eval()
    with torch.no_grad():
        together = model(collate(data, np.arange(len(data))))
        for i in range(len(TITLES)):
            alone = model(collate(data, np.array([i])))
            torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=1e-5)


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


@pytest.mark.parametrize("name", sorted(networks()))
def test_eval_mode_is_deterministic_and_train_mode_is_not(name):
    feat, data = encoded(TITLES)
    model, _ = make(name, feat, **{"model.dropout": 0.5})
    batch = collate(data, np.arange(len(data)))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(batch))
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(batch), model(batch))  # dropout is on while training


@pytest.mark.parametrize("name", sorted(networks()))
def test_can_overfit_one_batch(name):
    from titlecat.optim import make_optimizers

    feat, data = encoded(TITLES, LABELS)
    model, cfg = make(name, feat, **{"train.lr": 0.01, "train.weight_decay": 0.0})
    opts = make_optimizers(model, cfg.train)
    batch = collate(data, np.arange(len(data)))
    model.train()
    for _ in range(150):
        loss = F.cross_entropy(model(batch), batch.labels)
        for o in opts:
            o.zero_grad()
        loss.backward()
        for o in opts:
            o.step()
    model.eval()
    with torch.no_grad():
        assert (model(batch).argmax(1) == batch.labels).all()
    assert float(loss.detach()) < 0.1


def test_unknown_words_still_get_ngram_vectors():
    feat, data = encoded(TITLES)
    model, _ = make("mlp", feat)
    unseen = feat.encode(tokenize_titles(["Zapatillazas Nikeee"], feat.cfg))
    b = collate(unseen, np.array([0]))
    assert (b.type_words == 1).all()  # both words are <unk>
    x, _ = model.embed(b)
    assert not torch.allclose(x[0, 0], x[0, 1])  # but their n-grams tell them apart


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


@pytest.mark.parametrize("compiled", [False, True], ids=["embedding_bag", "compiled max"])
@pytest.mark.parametrize("how", ["mean", "max", "sum", "meanmax"])
def test_bag_pooling_equals_pooling_the_padded_grid(how, compiled, monkeypatch):
    """TokenEmbedder.pool (bags, no grid) gives the grid-and-mask pooling's values and gradients,
    with F.embedding_bag's max and with the compiled one that large CPU batches use."""
    from titlecat.models import layers
    from titlecat.models.layers import pool

    monkeypatch.setattr(layers, "BAG_MAX_MIN_TOKENS", 0 if compiled else 10**9)
    feat, data = encoded(TITLES + [LONG, "", "🙂🙂", "talle 42 talle 42 talle"])  # repeated tokens too
    model, _ = make("mlp", feat)
    batch = collate(data, np.arange(len(data)))
    bag = model.embed.pool(batch, how)
    grid = pool(*model.embed(batch), how)
    torch.testing.assert_close(bag, grid, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(bag)
    g_bag = torch.autograd.grad((bag * w).sum(), model.embed.words.weight)[0].to_dense()
    g_grid = torch.autograd.grad((grid * w).sum(), model.embed.words.weight)[0].to_dense()
    torch.testing.assert_close(g_bag, g_grid, rtol=1e-5, atol=1e-6)


def test_bigram_mean_is_the_mean_of_each_titles_bigram_vectors():
    feat, data = encoded(TITLES + [LONG, "solo", ""])
    model, _ = make("mlp", feat)
    batch = collate(data, np.arange(len(data)))
    vectors = model.embed.bigrams.weight[batch.bigrams]  # (M, D)
    expected = torch.stack([vectors[batch.bigram_titles == b].mean(0) if (batch.bigram_titles == b).any()
                            else torch.zeros(16) for b in range(batch.size)])
    torch.testing.assert_close(model.embed.bigram_mean(batch), expected)
    assert torch.all(model.embed.bigram_mean(batch)[-2:] == 0)  # one word or none: no bigram


def test_type_vectors_are_the_same_with_and_without_autograd():
    """Without a gradient the n-gram bags come straight from the table (one fused op): same values."""
    feat, data = encoded(TITLES + [LONG, "", "🙂🙂"])
    model, _ = make("mlp", feat)
    batch = collate(data, np.arange(len(data)))
    with_grad = model.embed.type_vectors(batch)
    with torch.no_grad():
        without = model.embed.type_vectors(batch)
    torch.testing.assert_close(without, with_grad.detach(), rtol=1e-6, atol=1e-6)


def test_compiled_bag_max_matches_embedding_bag_on_random_bags():
    from titlecat.models.layers import _BagMax

    torch.manual_seed(0)
    vec = torch.randn(50, 7, requires_grad=True)
    lengths = torch.tensor([3, 1, 0, 5, 2])
    types = torch.randint(0, 50, (int(lengths.sum()),))
    offsets = lengths.cumsum(0) - lengths
    w = torch.randn(5, 7)
    ours = _BagMax.apply(vec, types, lengths)
    (g_ours,) = torch.autograd.grad((ours * w).sum(), vec)
    theirs = F.embedding_bag(types, vec, offsets, mode="max")
    (g_theirs,) = torch.autograd.grad((theirs * w).sum(), vec)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(g_ours, g_theirs)
    assert torch.all(ours[2] == 0)  # an empty bag is zeros and passes no gradient


def test_tables_loaded_later_skips_only_the_table_init_and_is_restored():
    from titlecat.models.embedding import tables_loaded_later

    feat, _ = encoded(TITLES)
    torch.manual_seed(0)
    with tables_loaded_later():
        lazy, _ = make("mlp", feat)
    fresh, _ = make("mlp", feat)  # the context is over: tables are drawn again
    assert fresh.embed.ngrams.weight.std().item() == pytest.approx(0.1, rel=0.1)
    with pytest.raises(RuntimeError):
        with tables_loaded_later():
            raise RuntimeError("boom")
    again, _ = make("mlp", feat)  # restored after an error too
    torch.testing.assert_close(again.embed.ngrams.weight, fresh.embed.ngrams.weight)  # make() seeds 0
    lazy.load_state_dict(fresh.state_dict())  # what titlecat.load does next: every table replaced
    batch = collate(feat.encode(tokenize_titles(TITLES, feat.cfg)), np.arange(len(TITLES)))
    lazy.eval(), fresh.eval()
    torch.testing.assert_close(lazy(batch), fresh(batch))
