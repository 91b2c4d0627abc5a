"""The model bundle: save -> load is exact, the files are pickle-free, and every kind of
damage is a ``BundleError`` that names the file (exit 2 from the CLI, no traceback).

The bundle is that of conftest's ``trained`` tiny MLP (trained once for the session); each
damage test works on its own copy of it.
"""

from __future__ import annotations

import json
import os
import pickletools
import shutil
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import titlecat
from titlecat.bundle import HELD_OUT_FILE, BundleError, read_bundle
from titlecat.data import file_digest
from titlecat.cli import main

from conftest import SMALL, tiny_test_rows

# the shipped MLP config refits (train.refit), so its bundle keeps its validation logits too
# a network's bundle: the config, labels, featurizer and weights, and the refit's validation logits
FILES = ("config.yaml", "featurizer.json", "labels.json", "model.safetensors")
BUNDLE_FILES = {"bundle.json", *FILES, HELD_OUT_FILE}
TITLES = [r["title"] for r in tiny_test_rows()] + ["", "   ", "😀🎉", "casco " * 2000]


@pytest.fixture
def bundle_copy(trained, tmp_path) -> Path:
    """A private copy of the trained bundle, free to damage."""
    return Path(shutil.copytree(trained.bundle, tmp_path / "bundle"))


def _rewrite_checksum(bundle: Path, name: str) -> None:
    """Make bundle.json agree with an edited file (a deliberate, consistent edit)."""
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["files"][name] = file_digest(bundle / name)
    (bundle / "bundle.json").write_text(json.dumps(meta))


# ---- save -> load -------------------------------------------------------------------------


def test_save_then_load_predicts_identically(trained, tmp_path):
    saved = trained.clf.save(tmp_path / "saved")
    for directory in (saved, trained.bundle):  # both clf.save and train(output=...) bundles
        loaded = titlecat.load(directory)
        np.testing.assert_array_equal(loaded.predict_proba(TITLES), trained.clf.predict_proba(TITLES))
        assert loaded.predict(TITLES, k=2)[0] == trained.clf.predict(TITLES, k=2)[0]
        assert loaded.labels.classes_ == trained.clf.labels.classes_
        assert loaded.config == trained.clf.config
        state, ref = loaded.model.network.state_dict(), trained.clf.model.network.state_dict()
        assert state.keys() == ref.keys()
        assert all(torch.equal(state[k], ref[k]) for k in ref)
        assert not loaded.model.network.training


def test_loaded_bundle_evaluates_like_the_training_run(trained):
    loaded = titlecat.load(trained.bundle)
    scores = loaded.evaluate(trained.test)
    assert scores["balanced_accuracy"] == pytest.approx(trained.clf.info.test_balanced_accuracy, abs=1e-12)
    assert scores["accuracy"] == pytest.approx(trained.clf.info.test_accuracy, abs=1e-12)
    assert loaded.config.model.name == "mlp" and len(loaded.labels) == 4


def test_save_leaves_no_temporaries_and_replaces_an_old_bundle(trained, tmp_path):
    target = tmp_path / "out" / "model"
    trained.clf.save(target)
    trained.clf.save(target)  # saving again over a bundle replaces it
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model"]
    assert {p.name for p in target.iterdir()} == BUNDLE_FILES
    read_bundle(target)


def test_save_refuses_to_replace_a_directory_that_is_not_a_bundle(trained, tmp_path):
    target = tmp_path / "mywork"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(BundleError, match="not a titlecat bundle"):
        trained.clf.save(target)
    assert (target / "notes.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["mywork"]


def test_train_refuses_an_output_that_is_not_a_bundle_before_training(trained, tmp_path, monkeypatch):
    target = tmp_path / "mywork"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    monkeypatch.setattr("titlecat.models.network.NeuralModel.fit", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(BundleError, match="mywork"):
        titlecat.train(trained.train, trained.test, model="mlp", tracking=False, output=target, overrides=SMALL)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


# ---- the files: complete and pickle-free ------------------------------------------------------


def _is_pickle(data: bytes) -> bool:
    try:
        with warnings.catch_warnings():  # genops decoding arbitrary bytes warns about escapes
            warnings.simplefilter("ignore")
            ops = list(pickletools.genops(data))
    except Exception:  # noqa: BLE001 (any parse failure means "not a pickle")
        return False
    return bool(ops) and ops[-1][0].name == "STOP"


def test_bundle_holds_its_six_files_and_no_pickle(trained, tmp_path):
    saved = trained.clf.save(tmp_path / "saved")
    assert {p.name for p in saved.iterdir()} == BUNDLE_FILES
    assert BUNDLE_FILES <= {p.name for p in trained.bundle.iterdir()}
    for directory in (saved, trained.bundle):
        for f in directory.rglob("*"):
            assert f.suffix not in {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib"}, f
            data = f.read_bytes()
            assert not _is_pickle(data), f"{f} is a pickle"
            assert not data.startswith(b"PK\x03\x04"), f"{f} is a zip (torch.save format)"
            assert b"_rebuild_tensor" not in data and b"torch._utils" not in data, f

    # each file is what its name says
    meta = json.loads((saved / "bundle.json").read_text())
    assert meta["format"] == "titlecat-bundle" and meta["format_version"] == 1
    assert meta["files"] == {name: file_digest(saved / name) for name in (*FILES, HELD_OUT_FILE)}
    assert yaml.safe_load((saved / "config.yaml").read_text())["model"]["name"] == "mlp"
    assert json.loads((saved / "labels.json").read_text())
    assert json.loads((saved / "featurizer.json").read_text())
    raw = (saved / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert set(tensors) == set(trained.clf.model.network.state_dict())
    raw = (saved / HELD_OUT_FILE).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert {k for k in json.loads(raw[8 : 8 + n]) if k != "__metadata__"} == {"logits", "labels", "digest"}


# ---- damage -> BundleError naming the file ------------------------------------------------------


def _truncate_weights(b: Path) -> None:
    p = b / "model.safetensors"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _alter_featurizer(b: Path) -> None:
    p = b / "featurizer.json"
    data = bytearray(p.read_bytes())
    i = len(data) // 2
    data[i] = ord("7") if data[i] != ord("7") else ord("8")  # one byte, still plausible text
    p.write_bytes(bytes(data))


def _drop_labels(b: Path) -> None:
    (b / "labels.json").unlink()


def _future_version(b: Path) -> None:
    meta = json.loads((b / "bundle.json").read_text())
    meta["format_version"] = 999
    (b / "bundle.json").write_text(json.dumps(meta))


def _meta_not_json(b: Path) -> None:
    (b / "bundle.json").write_text("{ this is not json")


def _meta_not_object(b: Path) -> None:
    (b / "bundle.json").write_text("[1, 2, 3]")


def _meta_wrong_format(b: Path) -> None:
    meta = json.loads((b / "bundle.json").read_text())
    meta["format"] = "something-else"
    (b / "bundle.json").write_text(json.dumps(meta))


def _meta_missing_checksum(b: Path) -> None:
    meta = json.loads((b / "bundle.json").read_text())
    del meta["files"]["labels.json"]
    (b / "bundle.json").write_text(json.dumps(meta))


def _weights_are_a_pickle(b: Path) -> None:
    torch.save({"w": torch.zeros(3)}, b / "model.safetensors")
    _rewrite_checksum(b, "model.safetensors")


def _labels_not_json(b: Path) -> None:
    (b / "labels.json").write_text("not json at all")
    _rewrite_checksum(b, "labels.json")


def _featurizer_wrong_shape(b: Path) -> None:
    (b / "featurizer.json").write_text(json.dumps({"unexpected": True}))
    _rewrite_checksum(b, "featurizer.json")


def _config_changed_width(b: Path) -> None:
    cfg = yaml.safe_load((b / "config.yaml").read_text())
    cfg["model"]["embedding_dim"] = 24
    (b / "config.yaml").write_text(yaml.safe_dump(cfg))
    _rewrite_checksum(b, "config.yaml")


def _config_invalid(b: Path) -> None:
    cfg = yaml.safe_load((b / "config.yaml").read_text())
    cfg["model"]["dropout"] = -1
    (b / "config.yaml").write_text(yaml.safe_dump(cfg))
    _rewrite_checksum(b, "config.yaml")


def _truncate_held_out(b: Path) -> None:
    p = b / HELD_OUT_FILE
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _held_out_of_other_categories(b: Path) -> None:
    from safetensors.torch import save_file

    save_file({"logits": torch.zeros(3, 7), "labels": torch.zeros(3, dtype=torch.int64),
               "digest": torch.zeros(32, dtype=torch.uint8)}, str(b / HELD_OUT_FILE))
    _rewrite_checksum(b, HELD_OUT_FILE)


def _edit_meta(b: Path, **changes) -> None:
    meta = json.loads((b / "bundle.json").read_text())
    meta.update(changes)
    (b / "bundle.json").write_text(json.dumps(meta))


def _files_entry_outside(b: Path, name: str) -> None:
    meta = json.loads((b / "bundle.json").read_text())
    meta["files"][name] = "0" * 64  # load would hash (and so read) a file outside the bundle
    (b / "bundle.json").write_text(json.dumps(meta))


DAMAGE = {
    # name: (damage, file the message must name, words the message must hold)
    "truncated-weights": (_truncate_weights, "model.safetensors", "truncated or altered"),
    "altered-featurizer": (_alter_featurizer, "featurizer.json", "checksum mismatch"),
    "missing-labels": (_drop_labels, "labels.json", "missing"),
    "future-format-version": (_future_version, "bundle.json", "999"),
    "bundle-json-not-json": (_meta_not_json, "bundle.json", "damaged"),
    "bundle-json-not-object": (_meta_not_object, "bundle.json", ""),
    "bundle-json-other-format": (_meta_wrong_format, "bundle.json", "not a titlecat bundle"),
    "bundle-json-lacks-checksum": (_meta_missing_checksum, "labels.json", "checksum"),
    "weights-are-a-pickle": (_weights_are_a_pickle, "model.safetensors", ""),
    "labels-not-json": (_labels_not_json, "labels.json", ""),
    "featurizer-wrong-content": (_featurizer_wrong_shape, "featurizer.json", ""),
    "weights-do-not-fit-config": (_config_changed_width, "", "do not fit"),
    "config-invalid": (_config_invalid, "model.dropout", ""),
    "truncated-validation-logits": (_truncate_held_out, HELD_OUT_FILE, "truncated or altered"),
    "validation-logits-of-other-categories": (_held_out_of_other_categories, HELD_OUT_FILE, "do not fit 4 categories"),
    "files-entry-with-dotdot": (lambda b: _files_entry_outside(b, "../secret.txt"), "bundle.json",
                                "lists the file '../secret.txt', which is not a file name inside the bundle"),
    "files-entry-absolute": (lambda b: _files_entry_outside(b, "/etc/passwd"), "bundle.json",
                             "lists the file '/etc/passwd', which is not a file name inside the bundle"),
    "edited-n-classes": (lambda b: _edit_meta(b, n_classes=7), "bundle.json",
                         "says n_classes 7 but the model has 4 categories; the file was edited"),
    "edited-model-name": (lambda b: _edit_meta(b, model="cnn"), "bundle.json",
                          "says model 'cnn' but its config.yaml holds a mlp model; the file was edited"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_bundle_raises_bundle_error_naming_the_file(case, bundle_copy):
    damage, name, words = DAMAGE[case]
    damage(bundle_copy)
    with pytest.raises(BundleError) as err:
        titlecat.load(bundle_copy)
    msg = str(err.value)
    assert name in msg and words in msg, msg
    assert str(bundle_copy) in msg, msg


def test_a_file_is_not_a_bundle(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"\0" * 16)
    with pytest.raises(BundleError, match="not a model bundle directory") as err:
        titlecat.load(f)
    assert str(f) in str(err.value)


def test_a_missing_path_is_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle directory"):
        titlecat.load(tmp_path / "nowhere")


@pytest.mark.parametrize("content", [[], ["train.jsonl"]])
def test_a_directory_that_is_not_a_bundle(tmp_path, content):
    d = tmp_path / "runs"
    d.mkdir()
    for name in content:
        (d / name).write_text("{}\n")
    with pytest.raises(BundleError, match="bundle.json is missing") as err:
        titlecat.load(d)
    assert str(d) in str(err.value)


# ---- the CLI ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "empty-dir", "truncated-weights", "future-format-version"])
def test_cli_evaluate_with_a_bad_bundle_exits_2(case, trained, bundle_copy, tmp_path, capsys):
    if case == "missing":
        bad = tmp_path / "nowhere"
    elif case == "empty-dir":
        bad = tmp_path / "empty"
        bad.mkdir()
    else:
        DAMAGE[case][0](bundle_copy)
        bad = bundle_copy

    rc = main(["evaluate", "--model", str(bad), "--data", str(trained.test)])

    assert rc == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("titlecat: error:"), cap.err
    assert str(bad) in cap.err
    assert "Traceback" not in cap.out + cap.err
    assert cap.out == ""


def test_non_finite_weights_are_never_written_nor_loaded(tmp_path):
    """A diverged model would predict arbitrary categories with exit 0: its weights are refused."""
    import torch
    from safetensors.torch import save_file

    from titlecat.bundle import BundleError, read_tensors, write_tensors

    good = {"w": torch.ones(3), "steps": torch.tensor([2])}
    write_tensors(tmp_path / "good.safetensors", good)
    assert torch.equal(read_tensors(tmp_path / "good.safetensors")["w"], good["w"])
    for bad_value in (float("nan"), float("inf")):
        bad = {"w": torch.tensor([1.0, bad_value]), "steps": torch.tensor([2])}
        with pytest.raises(BundleError, match="w holds NaN or infinite weights"):
            write_tensors(tmp_path / "bad.safetensors", bad)
        assert not (tmp_path / "bad.safetensors").exists()
        save_file(bad, str(tmp_path / "bad.safetensors"))  # as another tool would write it
        with pytest.raises(BundleError, match="bad.safetensors: w holds NaN or infinite weights"):
            read_tensors(tmp_path / "bad.safetensors")
        (tmp_path / "bad.safetensors").unlink()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_a_bundle_has_the_permissions_the_umask_gives(trained, tmp_path, umask):
    """mkdtemp makes 0700 folders and safetensors 0600 files: a bundle saved for a group must be
    readable by the group, and one saved under umask 077 by nobody else."""
    old = os.umask(umask)
    try:
        out = trained.clf.save(tmp_path / "shared" / "bundle")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name
