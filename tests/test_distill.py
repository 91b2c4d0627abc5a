"""Distillation (``titlecat.distill``, ``titlecat.train(teacher=...)``, ``titlecat distill``): the
transfer set is made from the training titles alone, the loss is Hinton et al.'s, each title is
scored by the teacher once (and kept on disk), and a student trains from a teacher on tiny data
into an ordinary bundle -- one that follows its teacher where the teacher and the labels disagree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import titlecat
from titlecat.batching import collate
from titlecat.cli import main
from titlecat.config import Config, ConfigError, DistillConfig, TextConfig, TrainConfig
from titlecat.distill import Teacher, transfer_corpus
from titlecat.featurizer import Featurizer
from titlecat.loop import row_losses
from titlecat.tokenizer import tokenize_titles
from titlecat.vocab import LabelEncoder

from conftest import CATEGORIES, SMALL, _write_jsonl, tiny_rows

STUDENT = [*SMALL, "train.epochs=3"]


def corpus_of(titles):
    return tokenize_titles(titles, TextConfig())


def tokens(corpus, i):
    return [corpus.types[t] for t in corpus.token_types[corpus.offsets[i]: corpus.offsets[i + 1]]]


# ---- the transfer set ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["dropout", "crop", "mix"])
def test_transfer_titles_are_made_from_the_training_titles_alone(op):
    titles = [r["title"] for r in tiny_rows()]
    corpus = corpus_of(titles)
    cfg = DistillConfig(transfer=3, transfer_ops=[op], transfer_dropout=0.5)
    out = transfer_corpus(corpus, cfg, seed=1, max_tokens=6)
    assert len(out) == 3 * len(corpus) and (out.category_codes == -1).all()  # unlabelled: the teacher labels them
    assert out.types is corpus.types
    sources = [tokens(corpus, i) for i in range(len(corpus))]
    made = [tokens(out, i) for i in range(len(out))]
    assert all(made)  # no title is left empty
    if op == "dropout":  # each a subsequence of its source (grouped by source, in order)
        for k, toks in enumerate(made):
            src = iter(sources[k // 3])
            assert all(t in src for t in toks)
        assert sum(map(len, made)) < 3 * sum(map(len, sources))
    elif op == "crop":  # a run of at least half its source's tokens
        for k, toks in enumerate(made):
            src = sources[k // 3]
            assert len(toks) >= (len(src) + 1) // 2
            assert any(src[a: a + len(toks)] == toks for a in range(len(src)))
    else:  # the start of its source, then the end of some training title, at most max_tokens
        for k, toks in enumerate(made):
            src = sources[k // 3]
            head = next(h for h in range(len(toks), 0, -1) if src[:h] == toks[:h])
            assert head >= 1 and len(toks) <= max(6, len(src))
            assert any(other[len(other) - (len(toks) - head):] == toks[head:] for other in sources)
    again = transfer_corpus(corpus, cfg, seed=1, max_tokens=6)
    np.testing.assert_array_equal(again.token_types, out.token_types)  # seeded
    assert not np.array_equal(transfer_corpus(corpus, cfg, seed=2, max_tokens=6).token_types, out.token_types)


# ---- the loss -----------------------------------------------------------------------------------


def batch_with(logits_teacher, labels):
    corpus = corpus_of(["a b", "c d", "e"])
    f = Featurizer(TextConfig(buckets=50)).fit(corpus)
    data = f.encode(corpus, np.array(labels))
    data.teacher = np.asarray(logits_teacher, dtype=np.float16)
    return collate(data, np.arange(3))


def test_the_loss_mixes_the_teachers_softened_probabilities_and_the_labels():
    torch.manual_seed(0)
    student = torch.randn(3, 4)
    teacher = torch.randn(3, 4).half().float()
    batch = batch_with(teacher.numpy(), [2, 0, -1])  # the last: a transfer title, without a label
    cfg = TrainConfig(label_smoothing=0.0)
    d = DistillConfig(temperature=3.0, alpha=0.25)
    got = row_losses(student, batch, cfg, d)
    p_t = F.softmax(teacher / 3, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(student / 3, 1))).sum(1) * 9  # T^2 keeps the gradients' size
    ce = F.cross_entropy(student, torch.tensor([2, 0, 0]), reduction="none")
    torch.testing.assert_close(got[:2], 0.25 * kl[:2] + 0.75 * ce[:2])
    torch.testing.assert_close(got[2], kl[2])  # a transfer title: the teacher alone
    same = row_losses(teacher, batch, cfg, DistillConfig(alpha=1.0))
    torch.testing.assert_close(same, torch.zeros(3), atol=1e-6, rtol=0)  # the teacher's own logits: nothing to learn


# ---- the teacher's logits -------------------------------------------------------------------


class Counting:
    """A classifier stand-in that scores titles by their first word and counts the titles it scores."""

    def __init__(self, classes, text_cfg=TextConfig()):
        self.labels = LabelEncoder().fit(classes)
        self.text_config = text_cfg
        self.scored = 0

    def logits(self, corpus):
        self.scored += len(corpus)
        first = np.array([sum(map(ord, corpus.types[corpus.token_types[a]])) if b > a else 0
                          for a, b in zip(corpus.offsets[:-1], corpus.offsets[1:])])
        return np.stack([np.cos(first + k) * 3 for k in range(len(self.labels))], 1).astype(np.float32)


def test_each_title_is_scored_once_and_kept_on_disk(tmp_path):
    labels = LabelEncoder().fit(["B", "C", "D"])
    fake = Counting(["A", "B", "C", "D"])  # a category the student does not have: its columns are others
    store = tmp_path / "teacher-x"
    corpus = corpus_of(["uno dos", "tres", "uno dos", "cuatro cinco", "tres"])
    got = Teacher(fake, labels, TextConfig(), store).logits(corpus)
    assert fake.scored == 3  # three distinct titles
    full = fake.logits(corpus)
    np.testing.assert_array_equal(got, full[:, [1, 2, 3]].astype(np.float16))  # the student's categories
    fake.scored = 0
    more = corpus_of(["tres", "seis", "uno dos"])
    again = Teacher(fake, labels, TextConfig(), store).logits(more)  # another process: read from disk
    assert fake.scored == 1
    np.testing.assert_array_equal(again[[0, 2]], got[[1, 0]])
    (store / "logits.bin").write_bytes(b"\0" * (store / "logits.bin").stat().st_size)  # damaged: never trusted
    fake.scored = 0
    np.testing.assert_array_equal(Teacher(fake, labels, TextConfig(), store).logits(more), again)
    assert fake.scored == 3


def test_a_teacher_must_tokenize_alike_and_know_every_category():
    labels = LabelEncoder().fit(["A", "B"])
    with pytest.raises(ValueError, match="tokenizes titles differently"):
        Teacher(Counting(["A", "B"], TextConfig(fold_accents=False)), labels, TextConfig())
    with pytest.raises(ValueError, match="never learned 1 categories"):
        Teacher(Counting(["A"]), labels, TextConfig())


# ---- a student ----------------------------------------------------------------------------------


SWAP = {"SNEAKERS": "CELL_PHONES", "CELL_PHONES": "SNEAKERS"}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A tiny MLP teacher, and one taught with SNEAKERS and CELL_PHONES swapped: ``(folder, files)``."""
    d = tmp_path_factory.mktemp("teachers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TITLECAT_CACHE", str(d / "cache"))
        train = _write_jsonl(d / "train.jsonl.gz", tiny_rows(), gz=True)
        swapped = _write_jsonl(d / "swapped.jsonl.gz", [{**r, "category": SWAP.get(r["category"], r["category"])}
                                                        for r in tiny_rows()], gz=True)
        for name, f in (("teacher", train), ("swapped", swapped)):
            titlecat.train(f, model="mlp", tracking=False, output=d / name,
                           overrides=[*SMALL, "train.epochs=30", "train.patience=30", "train.lr=0.05"])
    return d, train


def test_a_student_trains_from_a_teacher_into_an_ordinary_bundle(teachers, tiny_test_file, tmp_path):
    d, train = teachers
    out = tmp_path / "student"
    clf = titlecat.train(train, tiny_test_file, model="mlp", teacher=d / "teacher", output=out, tracking=False,
                         overrides=[*STUDENT, "distill.transfer=2", "distill.temperature=3"])
    assert clf.info.teacher == str((d / "teacher").resolve()) and clf.info.teacher_seconds >= 0
    assert clf.info.refitted and clf.info.test_balanced_accuracy is not None
    loaded = titlecat.load(out)
    assert loaded.config.distill == DistillConfig(transfer=2, temperature=3.0)  # the defaults, but for these
    assert loaded.info.teacher == clf.info.teacher
    assert json.loads((out / "bundle.json").read_text())["teacher"] == clf.info.teacher
    np.testing.assert_allclose(loaded.predict_proba(["Casco Moto LS2"]), clf.predict_proba(["Casco Moto LS2"]))
    assert loaded.quantize("int8").predict("Casco Moto LS2")[0] == loaded.predict("Casco Moto LS2")[0]


def test_a_student_follows_its_teacher_where_the_labels_disagree(teachers, tmp_path):
    """alpha=1: only the teacher's probabilities are learned; the teacher learned SNEAKERS and
    CELL_PHONES swapped, and so does the student, whatever the file's labels say."""
    d, train = teachers
    clf = titlecat.train(train, model="mlp", teacher=d / "swapped", tracking=False,
                         overrides=[*SMALL, "train.epochs=30", "train.patience=30", "train.lr=0.05",
                                    "distill.alpha=1.0", "distill.temperature=1", "train.refit=false",
                                    "train.label_smoothing=0"])
    sneakers = [r["title"] for r in tiny_rows() if r["category"] == "SNEAKERS"]
    predicted = [labels[0] for labels in clf.predict(sneakers)[0]]
    assert predicted.count("CELL_PHONES") >= len(sneakers) - 1


def test_distill_command(teachers, tiny_test_file, tmp_path, capsys):
    d, train = teachers
    args = ["distill", "--teacher", str(d / "teacher"), "--train", str(train), "--test", str(tiny_test_file),
            "--output", str(tmp_path / "s"), "--no-tracking", *[a for s in STUDENT for a in ("--set", s)]]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"teacher {(d / 'teacher').resolve()}" in printed and "test balanced accuracy" in printed
    assert titlecat.load(tmp_path / "s").config.distill == DistillConfig()
    assert main(["evaluate", "--model", str(tmp_path / "s"), "--data", str(tiny_test_file)]) == 0


def test_what_cannot_be_distilled_is_refused(teachers, tmp_path, capsys):
    d, train = teachers
    with pytest.raises(ConfigError, match="tfidf model's SVM learns from labels only"):
        titlecat.train(train, model="tfidf", teacher=d / "teacher", tracking=False)
    with pytest.raises(ConfigError, match="an ensemble's members learn from labels"):
        titlecat.train(train, model="ensemble", teacher=d / "teacher", tracking=False)
    with pytest.raises(ConfigError, match="learns from a teacher; give one"):
        titlecat.train(train, model="mlp", overrides=["distill.alpha=0.9"], tracking=False)
    assert main(["distill", "--teacher", str(tmp_path / "nothing"), "--train", str(train), "--output",
                 str(tmp_path / "s"), "--no-tracking"]) == 2
    assert "not a model bundle" in capsys.readouterr().err
    rows = [{**r, "category": "MATE_GOURDS"} if r["category"] == "SNEAKERS" else r for r in tiny_rows()]
    other = _write_jsonl(tmp_path / "other.jsonl.gz", rows, gz=True)
    with pytest.raises(ValueError, match="never learned 1 categories .*MATE_GOURDS"):
        titlecat.train(other, model="mlp", teacher=d / "teacher", tracking=False, overrides=STUDENT)


def test_the_shipped_student_is_the_default_mlp_with_the_default_distill_settings():
    """configs/mlp-distill.yaml: what `titlecat distill --model mlp` trains; nothing but its distill
    section differs from configs/mlp.yaml (the tuned MLP), and that section holds the defaults."""
    student, mlp = Config.default("mlp-distill"), Config.default("mlp")
    assert student.distill == DistillConfig()
    assert {k: v for k, v in student.flat().items() if not k.startswith("distill.")} == mlp.flat()


def test_a_training_with_a_teacher_and_no_config_takes_the_shipped_student_config():
    """titlecat.train(teacher=...), train --teacher and distill alike: configs/<model>-distill.yaml
    where there is one, else configs/<model>.yaml (the recipe then adds the distill defaults)."""
    from titlecat.recipe import resolve_config

    assert resolve_config("mlp", student=True) == Config.default("mlp-distill")
    assert resolve_config("mlp").distill is None
    assert resolve_config("rnn", student=True) == Config.default("rnn")  # no rnn-distill.yaml
    assert resolve_config("mlp", Config.default("mlp"), student=True).distill is None  # a config given wins


def test_a_distill_section_round_trips_and_is_logged_as_params():
    cfg = Config.default("mlp").with_overrides(["distill.temperature=4", "distill.transfer_ops=[crop]"])
    assert cfg.distill == DistillConfig(temperature=4.0, transfer_ops=["crop"])
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert cfg.flat()["distill.temperature"] == "4.0" and "distill" not in Config.default("mlp").to_dict()
    with pytest.raises(ConfigError, match="distill.alpha"):
        Config.default("mlp").with_overrides(["distill.alpha=2"])
    assert CATEGORIES  # (the tiny corpus's categories: the teachers above learned them all)
