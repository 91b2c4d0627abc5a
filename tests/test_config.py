"""titlecat.config: every shipped config loads; YAML round trip; overrides; errors name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from titlecat.config import PACKAGE_CONFIGS, Config, ConfigError, DataConfig, TextConfig, TrainConfig, model_names

SHIPPED = sorted(PACKAGE_CONFIGS.glob("*.yaml"))


def test_configs_are_shipped():
    assert SHIPPED, f"no YAML configs in {PACKAGE_CONFIGS}"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_loads(path):
    cfg = Config.from_yaml(path)
    assert cfg.model.name in model_names()
    assert Config.default(path.stem) == cfg
    # headed by the command that runs it (STYLE.md)
    assert path.read_text(encoding="utf-8").startswith("# titlecat ")


UNTUNED = sorted((PACKAGE_CONFIGS / "untuned").glob("*.yaml"))


@pytest.mark.parametrize("path", UNTUNED, ids=[p.name for p in UNTUNED])
def test_a_tuned_config_differs_from_its_untuned_start_only_in_searched_settings(path):
    """configs/untuned/X.yaml is where the study behind configs/X.yaml started (benchmarks/experiments.sh)."""
    start, tuned = Config.from_yaml(path), Config.from_yaml(PACKAGE_CONFIGS / path.name)
    assert path.read_text(encoding="utf-8").startswith("# titlecat ")
    assert start.tuned_from is None and tuned.tuned_from is not None
    assert tuned.tuned_from.study.startswith(f"titlecat-{start.model.name}")
    assert tuned.search == start.search  # the study's space, kept for the next one
    a, b = start.flat(), tuned.flat()
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    after = set(tuned.tuned_from.changed_after)  # set by hand since, on validation: still listed only if changed
    assert after <= changed and not after & set(start.search)
    assert changed - after and changed - after <= set(start.search), changed - after - set(start.search)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_yaml_round_trip(path, tmp_path):
    cfg = Config.from_yaml(path)
    out = tmp_path / "config.yaml"
    text = cfg.to_yaml(out)
    assert out.read_text(encoding="utf-8") == text
    back = Config.from_yaml(out)
    assert back == cfg
    assert type(back.model) is type(cfg.model)
    assert back.to_dict() == cfg.to_dict()


def test_every_model_has_a_default_config():
    for name in model_names():
        assert Config.default(name).model.name == name


def test_defaults_fill_missing_sections():
    cfg = Config.from_dict({"model": {"name": "mlp"}})
    assert cfg.text == TextConfig() and cfg.data == DataConfig() and cfg.train == TrainConfig()


def test_with_overrides():
    cfg = Config.default("mlp")
    new = cfg.with_overrides(["train.lr=0.01", "model.hidden_sizes=[64,32]", "text.fold_accents=false"])
    assert new.train.lr == 0.01
    assert new.model.hidden_sizes == [64, 32]
    assert new.text.fold_accents is False
    # the original is untouched, and everything else is the same
    assert cfg.train.lr != 0.01
    assert new.with_overrides(["train.lr=%r" % cfg.train.lr, "model.hidden_sizes=%s" % cfg.model.hidden_sizes,
                               "text.fold_accents=true"]) == cfg  # fmt: skip


def test_with_overrides_from_a_dict_and_string_values():
    cfg = Config.default("mlp").with_overrides({"train.epochs": 3, "data.language": "spanish"})
    assert cfg.train.epochs == 3 and cfg.data.language == "spanish"
    assert Config.default("mlp").with_overrides(["data.language=portuguese"]).data.language == "portuguese"


def test_override_value_with_an_equals_sign_is_kept_whole(tmp_path):
    cfg = Config.default("mlp").with_overrides([f"model.pretrained_vectors={tmp_path}/a=b.vec"])
    assert cfg.model.pretrained_vectors == f"{tmp_path}/a=b.vec"


# ---- errors name the key --------------------------------------------------------------


def _config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_in_yaml(tmp_path):
    path = _config_file(tmp_path, "model:\n  name: mlp\n  hiden_sizes: [64]\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + rf": model\.hiden_sizes: unknown key"):
        Config.from_yaml(path)
    path = _config_file(tmp_path, "model:\n  name: mlp\ntrain:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        Config.from_yaml(path)


def test_unknown_section_in_yaml(tmp_path):
    path = _config_file(tmp_path, "model:\n  name: mlp\noptimizer:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"optimizer: unknown key"):
        Config.from_yaml(path)


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = _config_file(tmp_path, "model:\n  name: mlp\ntrain:\n\tlr: 0.1\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + rf":4: not valid YAML"):
        Config.from_yaml(path)


@pytest.mark.parametrize("text", ["", "- mlp\n- cnn\n", "just text\n"])
def test_yaml_that_is_not_a_mapping(tmp_path, text):
    path = _config_file(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(str(path)) + rf": expected a mapping"):
        Config.from_yaml(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Config.from_yaml(tmp_path / "nope.yaml")


def test_missing_model_section():
    with pytest.raises(ConfigError, match="model: Field required"):
        Config.from_dict({"train": {"lr": 0.1}})


def test_unknown_model_name():
    with pytest.raises(ConfigError, match=r"model: unknown model name 'nope'; known: .*mlp"):
        Config.from_dict({"model": {"name": "nope"}})
    with pytest.raises(ConfigError, match="unknown model name 'nope'"):
        Config.default("mlp").with_overrides(["model.name=nope"])
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        Config.default("nope")


@pytest.mark.parametrize(
    "override, key, problem",
    [
        ("model.dropout=-0.1", "model.dropout", "greater than or equal to 0"),
        ("model.dropout=1.0", "model.dropout", "less than 1"),
        ("train.lr=0", "train.lr", "greater than 0"),
        ("train.epochs=abc", "train.epochs", "valid integer"),
        ("train.epochs=1.5", "train.epochs", "valid integer"),
        ("train.batch_size=[1,2]", "train.batch_size", "valid integer"),
        ("text.fold_accents=maybe", "text.fold_accents", "valid boolean"),
        ("train.schedule=step", "train.schedule", "'constant', 'linear' or 'cosine'"),
        ("data.val_fraction=0.7", "data.val_fraction", "less than 0.5"),
        ("data.language=french", "data.language", "'all', 'spanish' or 'portuguese'"),
        ("text.ngram_max=2", "text.ngram_max", "must be 0 or >= ngram_min"),
        ("model.hidden_sizes=64", "model.hidden_sizes", "valid list"),
    ],
)
def test_bad_value_names_the_key(override, key, problem):
    with pytest.raises(ConfigError, match=r"--set: " + key.replace(".", r"\.") + r": .*" + re.escape(problem)):
        Config.default("mlp").with_overrides([override])


@pytest.mark.parametrize("override, problem", [("train.token_dropout=1.0", "less than 1"),
                                               ("train.token_dropout=-0.1", "greater than or equal to 0")])
def test_token_dropout_is_a_probability_below_one(override, problem):
    with pytest.raises(ConfigError, match=r"--set: train\.token_dropout: .*" + re.escape(problem)):
        Config.default("cnn").with_overrides([override])


def test_changed_after_must_name_settings(tmp_path):
    text = Path(PACKAGE_CONFIGS / "cnn.yaml").read_text(encoding="utf-8")
    assert "changed_after: [train.token_dropout, train.refit]" in text
    path = _config_file(tmp_path, text.replace("changed_after: [train.token_dropout, train.refit]",
                                               "changed_after: [train.token_dropuot, train.refit]"))
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r".*'train\.token_dropuot' is not a setting"):
        Config.from_yaml(path)


def test_bad_value_in_yaml_names_file_and_key(tmp_path):
    path = _config_file(tmp_path, "model:\n  name: mlp\n  dropout: -0.1\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + rf": model\.dropout: "):
        Config.from_yaml(path)


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.bogus=1", "--set train.bogus: unknown key 'bogus' in section train"),
        ("bogus.x=1", "--set bogus.x: unknown section 'bogus'"),
        ("model.bogus=1", r"model\.bogus: unknown key"),
        ("train.lr.x=1", "--set train.lr.x: unknown section 'lr'"),
        ("train.lr", r"--set 'train.lr': expected key=value"),
    ],
)
def test_bad_override_key(override, match):
    with pytest.raises(ConfigError, match=match):
        Config.default("mlp").with_overrides([override])


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_sections_reject_bad_assignment():
    cfg = Config.default("mlp")
    with pytest.raises(ValueError, match="dropout"):
        cfg.model.dropout = -1.0


# ---- flat ------------------------------------------------------------------------------


def test_flat_has_dotted_keys_and_string_values():
    cfg = Config.default("mlp").with_overrides(["model.hidden_sizes=[64,32]"])
    flat = cfg.flat()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in flat.items())
    assert flat["model.name"] == "mlp"
    assert flat["train.lr"] == str(cfg.train.lr)
    assert flat["model.hidden_sizes"] == "[64, 32]"
    assert flat["text.fold_accents"] == "True"
    assert flat["model.pretrained_vectors"] == "None"
    sections = {k.split(".")[0] for k in flat}
    assert sections == {"model", "text", "data", "train"}
    assert all(k.count(".") == 1 for k in flat)
    # one entry per leaf setting (the search space and the tuning provenance are not settings of the run)
    assert len(flat) == sum(len(v) for k, v in cfg.to_dict().items() if k not in ("search", "tuned_from"))
