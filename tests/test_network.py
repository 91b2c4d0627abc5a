"""titlecat.models.network: every registered network (``networks()``, built by ``build_network``)
-- shapes, padding invariance, eval determinism, can overfit a batch.

``encoded`` and ``make`` build the tiny encoded titles and networks that the batching and
embedding tests use too."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from titlecat.batching import collate
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
