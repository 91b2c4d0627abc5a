"""The training recipe, ``titlecat.train(...) -> Classifier``: bad arguments fail before any data
is read; the training file (and a validation file) is read once, before training, the test
file once, after it, and never when not given.

The files are those of conftest's ``trained`` tiny MLP.
"""

from __future__ import annotations

import pytest

import titlecat
from titlecat import Config, ConfigError

from conftest import SMALL, _write_jsonl, tiny_rows, tiny_test_rows

ONE_EPOCH = SMALL[1:] + ["train.epochs=1"]  # for the runs that only check which files are read, and when


def test_unknown_keyword_argument_raises_type_error(trained):
    with pytest.raises(TypeError):
        titlecat.train(trained.train, trained.test, model="mlp", tracking=False, epochs=3)
    with pytest.raises(TypeError):
        titlecat.train(trained.train, trained.test, model="mlp", trackign=False)


def test_model_name_differing_from_the_config_raises_config_error(tmp_path):
    cfg = Config.default("mlp")
    missing = tmp_path / "never-read.jsonl"  # the error comes before any data is read
    with pytest.raises(ConfigError, match="mlp") as err:
        titlecat.train(missing, model="transformer-that-is-not-mlp", config=cfg, tracking=False)
    assert "transformer-that-is-not-mlp" in str(err.value)
    yaml_cfg = tmp_path / "mlp.yaml"
    cfg.to_yaml(yaml_cfg)
    with pytest.raises(ConfigError, match="model.name"):
        titlecat.train(missing, model="other", config=yaml_cfg, tracking=False)


@pytest.fixture
def read_log(monkeypatch):
    """Records, in order, every file ``train`` tokenizes and when training (``fit``) runs."""
    events: list[str] = []
    import titlecat.classifier
    import titlecat.dataset
    from titlecat.models.network import NeuralModel

    real_tokenize, real_fit = titlecat.dataset.tokenize_file, NeuralModel.fit

    def tokenize_spy(path, *args, **kwargs):
        events.append(str(path))
        return real_tokenize(path, *args, **kwargs)

    def fit_spy(*args, **kwargs):
        events.append("<fit>")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(titlecat.dataset, "tokenize_file", tokenize_spy)  # training and validation files
    monkeypatch.setattr(titlecat.classifier, "tokenize_file", tokenize_spy)  # the test file
    monkeypatch.setattr(NeuralModel, "fit", fit_spy)
    return events


def test_train_reads_test_once_after_training(trained, read_log):
    clf = titlecat.train(trained.train, trained.test, model="mlp", tracking=False, overrides=ONE_EPOCH)
    # two trainings (the shipped MLP config refits: train.refit), then the one test read
    assert read_log == [str(trained.train), "<fit>", "<fit>", str(trained.test)]
    assert clf.info.test_n == len(tiny_test_rows())


def test_train_with_a_validation_file(trained, tmp_path, read_log):
    val_rows = [r | {"title": r["title"] + " Original"} for r in tiny_rows()[::4]]  # 11 rows, all 4 categories
    val = _write_jsonl(tmp_path / "val.jsonl", val_rows)

    clf = titlecat.train(trained.train, trained.test, validation=val, model="mlp", tracking=False,
                         overrides=ONE_EPOCH)

    assert read_log == [str(trained.train), str(val), "<fit>", "<fit>", str(trained.test)]
    assert clf.info.n_train == len(tiny_rows())  # nothing carved from training
    assert clf.info.n_val == len(val_rows)
    assert clf.info.test_n == len(tiny_test_rows())
    assert clf.info.best_epoch == 1


def test_train_without_test_never_reads_it(trained, read_log):
    clf = titlecat.train(trained.train, model="mlp", tracking=False, overrides=ONE_EPOCH)
    assert read_log == [str(trained.train), "<fit>", "<fit>"]
    assert clf.info.test_balanced_accuracy is None
    labels, _ = clf.predict("Casco Moto")
    assert labels[0] in clf.labels.classes_
