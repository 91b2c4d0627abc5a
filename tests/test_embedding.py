"""titlecat.models.embedding: the ``TokenEmbedder`` -- token vectors from word and character
n-gram tables, pooling without a padded grid, the bigram mean, ``tables_loaded_later`` -- and
the title's TF-IDF bag (the MLP's "tfidf" pooling: a linear layer on each title's sparse
TF-IDF vector).

``setup`` and ``features_matrix`` serve ``test_featurizer.py``'s document-frequency tests too."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from test_network import LONG, TITLES, encoded, make

from titlecat.batching import collate
from titlecat.config import Config, TextConfig
from titlecat.corpus import ragged_arange
from titlecat.featurizer import Featurizer, document_frequencies, title_bigrams
from titlecat.models import build_network
from titlecat.tokenizer import tokenize_titles

# ---- token vectors and pooling ------------------------------------------------------------


def test_unknown_words_still_get_ngram_vectors():
    feat, data = encoded(TITLES)
    model, _ = make("mlp", feat)
    unseen = feat.encode(tokenize_titles(["Zapatillazas Nikeee"], feat.cfg))
    b = collate(unseen, np.array([0]))
    assert (b.type_words == 1).all()  # both words are <unk>
    x, _ = model.embed(b)
    assert not torch.allclose(x[0, 0], x[0, 1])  # but their n-grams tell them apart


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


# ---- the TF-IDF bag (the MLP's "tfidf" pooling) --------------------------------------------

TRAIN = [
    "Zapatillas Nike Air Max 90 Talle 42",
    "Zapatillas Adidas Superstar Blancas Mujer Talle 38",
    "Casco Moto Integral Ls2 Rapid Talle L",
    "Casco Rebatible Hawk 990 Moto Doble Visor",
    "Celular Samsung Galaxy A52 128gb Negro",
    "Iphone 11 64gb Libre Impecable Negro",
    "talle 42 talle 42 talle",  # repeated tokens and bigrams
]


def setup(min_df=1, titles=TRAIN, buckets=997):
    text = TextConfig(buckets=buckets, bigram_buckets=311)
    corpus = tokenize_titles(titles, text)
    feat = Featurizer(text).fit(corpus)
    data = feat.encode(corpus, np.arange(len(titles)) % 3)
    cfg = Config.default("mlp").with_overrides({"model.embedding_dim": 8, "model.pooling": "tfidf",
                                                "model.idf_min_df": min_df, "model.hidden_sizes": [6]})
    torch.manual_seed(0)
    model = build_network(cfg.model, n_classes=3, **feat.sizes())
    model.adapt(data)
    return feat, data, model


def features_matrix(data, sizes):
    """(titles, words + buckets + bigram buckets) occurrence counts, built independently of the model."""
    n_w, n_b = sizes["n_words"], sizes["n_buckets"]
    titles = np.repeat(np.arange(len(data)), data.lengths())
    t = data.token_types
    starts, counts = data.type_ngram_offsets[t], data.type_ngram_offsets[t + 1] - data.type_ngram_offsets[t]
    bigrams, bigram_titles = title_bigrams(data, np.arange(len(t)), titles)
    rows = np.concatenate([titles, np.repeat(titles, counts), bigram_titles])
    cols = np.concatenate([data.word_ids(), n_w + data.type_ngrams[ragged_arange(starts, counts)], n_w + n_b + bigrams])
    size = n_w + n_b + sizes["n_bigram_buckets"]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(data), size))


@pytest.mark.parametrize("min_df", [1, 2])  # 2: features of idf 0 (left out of the bag) in most titles
def test_bag_is_the_normalised_tfidf_vector_times_the_tables(min_df):
    feat, data, model = setup(min_df)
    e = model.embed
    counts = features_matrix(data, feat.sizes())
    idf = torch.cat([e.idf_words, e.idf_ngrams, e.idf_bigrams]).double().numpy()
    # per occurrence: the squared norm sums idf^2 over occurrences (not (tf * idf)^2)
    norm2 = np.asarray(counts.multiply(idf[None, :] ** 2).sum(1)).ravel()
    X = sp.diags(1 / np.sqrt(norm2)) @ counts.multiply(idf[None, :]).tocsr()
    tables = torch.cat([e.words.weight, e.ngrams.weight, e.bigrams.weight]).detach().double().numpy()
    expected = torch.from_numpy(X @ tables).float()
    batch = collate(data, np.arange(len(data)))
    torch.testing.assert_close(e.tfidf_bag(batch), expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the fused no-grad path gives the same values
        torch.testing.assert_close(e.tfidf_bag(batch), expected, rtol=1e-5, atol=1e-6)


def test_idf_is_smooth_and_unseen_features_weigh_nothing():
    feat, data, model = setup(min_df=2, buckets=100_003)  # so that the unseen title below collides with nothing
    df = document_frequencies(data, **feat.sizes())
    n = len(data)
    idf = model.embed.idf_words.numpy()
    seen = df["words"] >= 2
    np.testing.assert_allclose(idf[seen], np.log((1 + n) / (1 + df["words"][seen])) + 1, rtol=1e-6)
    assert np.all(idf[~seen] == 0)
    assert np.all(model.embed.idf_ngrams.numpy()[df["ngrams"] < 2] == 0)
    # a title made only of features no training title has: the zero vector, finite logits
    corpus = tokenize_titles(["qwxz"], feat.cfg)
    unseen = feat.encode(corpus)
    batch = collate(unseen, np.arange(1))
    bag = model.embed.tfidf_bag(batch)
    assert torch.all(bag == 0)
    model.eval()
    assert torch.isfinite(model(batch)).all()


def test_features_of_idf_zero_get_no_gradient_rows_and_their_rows_never_move():
    from titlecat.optim import make_optimizers

    feat, data, model = setup(min_df=2)
    e = model.embed
    batch = collate(data, np.arange(len(data)))
    zero_words = set(np.flatnonzero(e.idf_words.numpy() == 0).tolist())
    zero_bigrams = set(np.flatnonzero(e.idf_bigrams.numpy() == 0).tolist())
    used_bigrams = set(batch.bigrams.tolist())
    assert zero_bigrams & used_bigrams and zero_words & set(batch.type_words.tolist())  # the case is there
    model(batch).logsumexp(1).sum().backward()
    assert not zero_words & set(e.words.weight.grad.coalesce().indices()[0].tolist())
    assert not zero_bigrams & set(e.bigrams.weight.grad.coalesce().indices()[0].tolist())
    assert set(e.bigrams.weight.grad.coalesce().indices()[0].tolist()) == used_bigrams - zero_bigrams
    # a few optimizer steps: rows of idf 0 keep their initial values
    before = {name: t.weight.detach().clone() for name, t in (("words", e.words), ("bigrams", e.bigrams))}
    opts = make_optimizers(model, Config.default("mlp").train)
    for _ in range(3):
        for o in opts:
            o.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(batch), batch.labels).backward()
        for o in opts:
            o.step()
    for name, zero in (("words", zero_words), ("bigrams", zero_bigrams)):
        rows = torch.tensor(sorted(zero))
        after = getattr(e, name).weight.detach()
        assert torch.equal(after[rows], before[name][rows]), name
        assert not torch.equal(after, before[name])  # while the others learned


def test_logits_do_not_depend_on_the_rest_of_the_batch():
    feat, data, model = setup()
    model.eval()
    with torch.no_grad():
        together = model(collate(data, np.arange(len(data))))
        alone = torch.cat([model(collate(data, np.array([i]))) for i in range(len(data))])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_idf_is_saved_with_the_weights():
    feat, data, model = setup(min_df=2)
    state = model.state_dict()
    assert {"embed.idf_words", "embed.idf_ngrams", "embed.idf_bigrams"} <= set(state)
    cfg = Config.default("mlp").with_overrides({"model.embedding_dim": 8, "model.pooling": "tfidf",
                                                "model.hidden_sizes": [6]})
    fresh = build_network(cfg.model, n_classes=3, **feat.sizes())  # idf 1 until loaded
    assert torch.all(fresh.embed.idf_words == 1)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.embed.idf_words, model.embed.idf_words)


def test_idf_comes_from_the_data_given_to_adapt_only():
    feat, data, model = setup()
    before = model.embed.idf_words.clone()
    model.adapt(data)  # same data: same idf
    torch.testing.assert_close(model.embed.idf_words, before)
    sub_corpus = tokenize_titles(TRAIN[:3], feat.cfg)
    model.adapt(feat.encode(sub_corpus))
    celular = feat.vocab_.lookup(["celular"])[0]
    assert model.embed.idf_words[celular] == 0  # not in the 3 titles it was adapted on
