"""Fixtures shared by every test: an isolated cache and MLflow store, file writers,
the real data (skipped when absent), a tiny literal corpus of Spanish titles, a
bilingual one in the original challenge format, and the models trained once on them.

The tiny corpus is written by the tests themselves (never a committed data copy):
four categories that a bag of words separates easily, so a model can overfit it
in a few steps.  Other test files import ``tiny_rows`` / ``tiny_test_rows`` or use
the ``tiny_train_file`` / ``tiny_test_file`` fixtures.

Trained once per session and shared (each takes seconds to train):

* ``trained`` (and its ``clf``): a tiny MLP on the tiny files, with its bundle; the
  classifier, evaluation, recipe, bundle and CLI tests use it.
* ``bilingual`` / ``joint``: the bilingual files and an MLP trained jointly on them;
  the multilingual, dataset, data and submission tests use them.

The corpus helpers ``records``, ``titles_of`` and ``assert_corpus_equal`` serve the
corpus, tokenizer, cache and featurizer tests.
"""

from __future__ import annotations

import csv
import gzip
import json
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from titlecat.corpus import Corpus
from titlecat.data import Record

# the repository is cloned beside a ``shared`` folder that holds the data
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CATEGORIES = ("SNEAKERS", "MOTORCYCLE_HELMETS", "CELL_PHONES", "DIGITAL_CAMERAS")

_TRAIN_TITLES = {
    "SNEAKERS": [
        "Zapatillas Nike Air Max 90 Talle 42",
        "Zapatillas Adidas Superstar Blancas Originales",
        "Zapatillas Running Nike Revolution 5 Hombre",
        "Zapatillas Puma Suede Classic Negras Talle 40",
        "Zapatillas Topper Urbanas Lona Mujer",
        "Zapatillas Deportivas Reebok Classic Cuero",
        "Zapatillas Vans Old Skool Negro Blanco",
        "Zapatillas Converse All Star Bota Talle 38",
        "Zapatillas New Balance 574 Gris Hombre",
        "Zapatillas Fila Disruptor Blancas Plataforma",
        "Zapatillas Nike Air Force 1 Blancas Talle 41",
    ],
    "MOTORCYCLE_HELMETS": [
        "Casco Moto Integral LS2 Rapid Negro Mate",
        "Casco Moto Abierto Hawk Visor Ahumado",
        "Casco Rebatible Shiro Sh-501 Moto Talle L",
        "Casco Motocross Fox V1 Enduro Adulto",
        "Casco Moto Vertigo Integral Certificado",
        "Casco Moto Agv K3 Sv Rossi Talle M",
        "Casco Moto Mt Thunder 3 Doble Visor",
        "Casco Para Moto 110cc Abierto Con Visor",
        "Casco Moto Integral Shaft 522 Rojo",
        "Casco Moto Halcon H58 Vintage",
        "Casco Moto Edge Negro Brillante Talle XL",
    ],
    "CELL_PHONES": [
        "Celular Samsung Galaxy A10 32gb Libre",
        "Celular Motorola Moto G7 Plus 64gb Dual Sim",
        "Celular Xiaomi Redmi Note 8 128gb Azul",
        "Celular iPhone 7 32gb Libre Garantía",
        "Celular Huawei P20 Lite 32gb Negro",
        "Celular Libre Samsung J7 Prime 16gb",
        "Celular Alcatel 1 Dual Sim 8gb Liberado",
        "Celular Motorola E6 Plus 32gb Android",
        "Celular LG K40 32gb Cámara Dual Libre",
        "Celular Nokia 2.2 16gb Android One",
        "Smartphone Celular Xiaomi Mi A3 64gb Libre",
    ],
    "DIGITAL_CAMERAS": [
        "Cámara Digital Canon Powershot Sx540 20mp",
        "Cámara Nikon Coolpix B500 16mp Wifi",
        "Cámara Sony Cyber-shot Dsc-w830 20.1mp",
        "Cámara Digital Kodak Pixpro Fz43 Zoom 4x",
        "Cámara Fujifilm Finepix Xp130 Sumergible",
        "Cámara Digital Canon Eos Rebel T6 Kit 18-55",
        "Cámara Réflex Nikon D3500 Lente 18-55mm",
        "Cámara Digital Sony Alpha A6000 Mirrorless",
        "Cámara Instantánea Fujifilm Instax Mini 9",
        "Cámara Digital Olympus Tg-5 Resistente Agua",
        "Cámara Digital Panasonic Lumix Fz80 4k",
    ],
}

_TEST_TITLES = {
    "SNEAKERS": [
        "Zapatillas Nike Air Zoom Pegasus Talle 43",
        "Zapatillas Adidas Running Hombre Negras",
        "Zapatillas Puma Mujer Blancas Talle 37",
    ],
    "MOTORCYCLE_HELMETS": [
        "Casco Moto Integral Negro Talle M",
        "Casco Moto Abierto Visor Transparente",
        "Casco Moto Rebatible Ls2 Talle L",
    ],
    "CELL_PHONES": [
        "Celular Samsung Galaxy A20 32gb Libre",
        "Celular Motorola Moto G8 64gb Azul",
        "Celular Xiaomi Redmi 8 32gb Dual Sim",
    ],
    "DIGITAL_CAMERAS": [
        "Cámara Digital Canon Powershot 20mp Zoom",
        "Cámara Nikon Coolpix Digital Wifi",
        "Cámara Sony Digital 20mp Compacta",
    ],
}


def _rows(titles: dict[str, list[str]]) -> list[dict]:
    rows = []
    for category, ts in titles.items():
        for i, t in enumerate(ts):
            # every third row is "unreliable", as in the challenge data, so filters have work to do
            quality = "unreliable" if i % 3 == 2 else "reliable"
            rows.append({"title": t, "category": category, "language": "spanish", "label_quality": quality})
    return rows


def tiny_rows() -> list[dict]:
    """44 training rows (11 per category) of literal Spanish titles: title/category/language/label_quality."""
    return _rows(_TRAIN_TITLES)


def tiny_test_rows() -> list[dict]:
    """12 held-out rows (3 per category), none of them in ``tiny_rows()``."""
    return _rows(_TEST_TITLES)


def _write_jsonl(path: Path, rows, gz: bool = False) -> Path:
    """Write ``rows`` one per line: a dict as JSON, a ``str`` or ``bytes`` line as is (for bad input)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in rows:
        if isinstance(r, bytes):
            lines.append(r)
        elif isinstance(r, str):
            lines.append(r.encode("utf-8"))
        else:
            lines.append(json.dumps(r, ensure_ascii=False).encode("utf-8"))
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def _write_csv(path: Path, header: list[str], rows, gz: bool = False) -> Path:
    """Write a CSV with ``header``; rows are sequences, or dicts keyed by the header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([r.get(h, "") for h in header] if isinstance(r, dict) else r)
    return path


@contextmanager
def module_workspace(tmp_path_factory, name: str):
    """``(folder, train file, test file)`` for a module-scoped fixture: the tiny files written in a
    fresh folder, with the cache and the MLflow store pointed there while the fixture trains (the
    autouse isolation below is per test)."""
    d = tmp_path_factory.mktemp(name)
    train = _write_jsonl(d / "train.jsonl.gz", tiny_rows(), gz=True)
    test = _write_jsonl(d / "test.jsonl.gz", tiny_test_rows(), gz=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TITLECAT_CACHE", str(d / "cache"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        yield d, train, test


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test reads or writes the user's cache or MLflow store."""
    monkeypatch.setenv("TITLECAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, rows, gz=False) -> path``."""
    return _write_jsonl


@pytest.fixture
def write_csv():
    """``write_csv(path, header, rows, gz=False) -> path``."""
    return _write_csv


@pytest.fixture
def real_data() -> Path:
    """The shared real data folder; the test is skipped where it is not present."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture
def tiny() -> list[dict]:
    return tiny_rows()


@pytest.fixture
def tiny_train_file(tmp_path) -> Path:
    return _write_jsonl(tmp_path / "tiny" / "train.jsonl.gz", tiny_rows(), gz=True)


@pytest.fixture
def tiny_test_file(tmp_path) -> Path:
    return _write_jsonl(tmp_path / "tiny" / "test.jsonl.gz", tiny_test_rows(), gz=True)


@pytest.fixture(scope="session")
def _empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made, once per session (making them takes seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_db(tmp_path, _empty_mlflow_db) -> Path:
    """The test's MLflow store (``MLFLOW_TRACKING_URI``), ready made: a copy of an empty one."""
    import shutil

    path = tmp_path / "mlflow.db"
    shutil.copyfile(_empty_mlflow_db, path)
    return path


# ---- corpus helpers (the corpus, tokenizer, cache and featurizer tests) ------------------------


def records(rows):
    return [
        Record(r["title"], r.get("category"), r.get("language"), r.get("label_quality"), None, i)
        for i, r in enumerate(rows, 1)
    ]


def titles_of(corpus: Corpus) -> list[list[str]]:
    """Token strings of each title, rebuilt from the compact arrays."""
    o = corpus.offsets
    return [[corpus.types[t] for t in corpus.token_types[o[i] : o[i + 1]]] for i in range(len(corpus))]


def assert_corpus_equal(a: Corpus, b: Corpus) -> None:
    assert a.types == b.types
    assert a.categories == b.categories and a.languages == b.languages and a.qualities == b.qualities
    for name in ("token_types", "offsets", "category_codes", "language_codes", "quality_codes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.skipped == b.skipped


# ---- one tiny MLP, trained once --------------------------------------------------------------

# its settings; the recipe tests train more MLPs like it (``ONE_EPOCH``), the bundle tests one too
SMALL = ["train.epochs=2", "text.buckets=2000", "model.embedding_dim=16", "model.hidden_sizes=[32]"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny MLP trained once for the session on the tiny files (untracked), with its bundle
    (written by ``train(output=...)``): ``clf``, ``bundle``, ``train``, ``test``.

    The classifier, evaluate and recipe tests use the classifier and the files, the bundle tests
    the bundle and the classifier (damage tests work on a copy), the CLI tests the bundle.  Nothing
    may change them.  (``test_report.py`` trains its own runs: it needs them tracked in one MLflow
    experiment, with other settings; ``test_refit.py``, ``test_bad_input.py`` and the ensemble tests
    need other data or settings too.)
    """
    import titlecat

    with module_workspace(tmp_path_factory, "trained") as (d, train, test):
        clf = titlecat.train(train, test, model="mlp", tracking=False, output=d / "bundle", overrides=SMALL)
    return SimpleNamespace(clf=clf, bundle=d / "bundle", train=train, test=test)


@pytest.fixture
def clf(trained):
    return trained.clf


# ---- Spanish + Portuguese, in the original challenge format ------------------------------------
# four categories in both languages, ``BABY_CAR_SEATS`` only in Portuguese, ``MATE_GOURDS`` only in
# Spanish, every third row ``unreliable``

TRAIN_HEADER = ["title", "label_quality", "language", "category"]
TEST_HEADER = ["id", "title", "language"]

_PT_TRAIN = {
    "SNEAKERS": [
        "Tênis Nike Air Max 90 Masculino Original", "Tênis Adidas Superstar Branco Feminino",
        "Tênis Corrida Nike Revolution 5 Masculino", "Tênis Puma Suede Classic Preto 40",
        "Tênis Olympikus Casual Lona Feminino", "Tênis Esportivo Reebok Classic Couro",
        "Tênis Vans Old Skool Preto Branco", "Tênis Converse All Star Cano Alto 38",
    ],
    "MOTORCYCLE_HELMETS": [
        "Capacete Moto Fechado LS2 Rapid Preto Fosco", "Capacete Moto Aberto Pro Tork Viseira Fumê",
        "Capacete Escamoteável Norisk Moto Tamanho 58", "Capacete Motocross Fox V1 Trilha Adulto",
        "Capacete Moto Fechado Certificado Inmetro", "Capacete Moto Agv K3 Rossi Tamanho 56",
        "Capacete Moto Mt Thunder 3 Viseira Dupla", "Capacete Para Moto Aberto Com Viseira",
    ],
    "CELL_PHONES": [
        "Celular Samsung Galaxy A10 32gb Desbloqueado", "Celular Motorola Moto G7 Plus 64gb Dual Chip",
        "Smartphone Xiaomi Redmi Note 8 128gb Azul", "Celular iPhone 7 32gb Vitrine Garantia",
        "Smartphone Huawei P20 Lite 32gb Preto", "Celular Samsung J7 Prime 16gb Desbloqueado",
        "Celular Motorola E6 Plus 32gb Android", "Smartphone LG K40 32gb Câmera Dupla",
    ],
    "DIGITAL_CAMERAS": [
        "Câmera Digital Canon Powershot Sx540 20mp", "Câmera Nikon Coolpix B500 16mp Wifi",
        "Câmera Sony Cyber-shot Dsc-w830 20.1mp", "Câmera Digital Kodak Pixpro Fz43 Zoom 4x",
        "Câmera Fujifilm Finepix Xp130 À Prova D'água", "Câmera Digital Canon Eos Rebel T6 Kit 18-55",
        "Câmera Profissional Nikon D3500 Lente 18-55mm", "Câmera Digital Sony Alpha A6000 Mirrorless",
    ],
    "BABY_CAR_SEATS": [
        "Cadeirinha Bebê Conforto Burigotto Touring", "Cadeira Auto Infantil Isofix Galzerano",
        "Bebê Conforto Maxi-cosi Citi Preto", "Cadeirinha Carro Infantil Safety 1st 0-25kg",
        "Bebê Conforto Cosco Com Base Cinza", "Cadeirinha Auto Infantil Tutti Baby Reclinável",
        "Cadeira Infantil Para Carro Kiddo Isofix", "Bebê Conforto Chicco Keyfit Base Isofix",
    ],
}
_PT_TEST = {
    "SNEAKERS": ["Tênis Nike Air Zoom Pegasus 43", "Tênis Adidas Corrida Masculino Preto",
                 "Tênis Puma Feminino Branco 37"],
    "MOTORCYCLE_HELMETS": ["Capacete Moto Fechado Preto Tamanho 60", "Capacete Moto Aberto Viseira Cristal",
                           "Capacete Moto Escamoteável Ls2 58"],
    "CELL_PHONES": ["Celular Samsung Galaxy A20 32gb Dual Chip", "Smartphone Motorola Moto G8 64gb Azul",
                    "Celular Xiaomi Redmi 8 32gb Desbloqueado"],
    "DIGITAL_CAMERAS": ["Câmera Digital Canon Powershot 20mp Zoom", "Câmera Nikon Coolpix Digital Wifi",
                        "Câmera Sony Digital 20mp Compacta"],
    "BABY_CAR_SEATS": ["Cadeirinha Bebê Carro Burigotto Isofix", "Bebê Conforto Galzerano Cinza Com Base",
                       "Cadeira Auto Infantil Reclinável 0-18kg"],
}
_ES_ONLY_TRAIN = [
    "Mate Calabaza Forrado Cuero Con Bombilla", "Mate Imperial Calabaza Virola Alpaca",
    "Mate Torpedo Cuero Virola Bronce", "Mate Camionero Calabaza Premium Bombilla",
    "Mate De Madera Algarrobo Con Bombilla", "Mate Acero Inoxidable Termico Bombilla",
    "Mate Calabaza Guampa Virola Plata", "Mate Uruguayo Calabaza Cuero Crudo",
]
_ES_ONLY_TEST = ["Mate Imperial Calabaza Bombilla Pico Rey", "Mate Torpedo Cuero Virola Alpaca",
                 "Mate Camionero Uruguayo Cuero"]


def _language_rows(titles: dict[str, list[str]], language: str) -> list[dict]:
    return [{"title": t, "category": c, "language": language,
             "label_quality": "unreliable" if i % 3 == 2 else "reliable"}
            for c, ts in titles.items() for i, t in enumerate(ts)]


def bilingual_rows() -> list[dict]:
    """Spanish (the tiny corpus + MATE_GOURDS) and Portuguese (+ BABY_CAR_SEATS) rows, interleaved."""
    es = tiny_rows() + _language_rows({"MATE_GOURDS": _ES_ONLY_TRAIN}, "spanish")
    pt = _language_rows(_PT_TRAIN, "portuguese")
    rows = [r for pair in zip(es, pt) for r in pair] + es[len(pt):] + pt[len(es):]
    assert len(rows) == len(es) + len(pt)
    return rows


def bilingual_test_rows() -> list[dict]:
    return (tiny_test_rows() + _language_rows({"MATE_GOURDS": _ES_ONLY_TEST}, "spanish")
            + _language_rows(_PT_TEST, "portuguese"))


# the joint MLP's settings (with language tokens)
FAST = {"model.embedding_dim": 16, "model.hidden_sizes": [], "text.buckets": 2000, "text.bigram_buckets": 0,
        "train.epochs": 12, "train.batch_size": 32, "train.lr": 0.05, "train.warmup_steps": 0, "train.patience": 12,
        "text.language_token": True}


@pytest.fixture(scope="session")
def bilingual(tmp_path_factory) -> Path:
    """A folder with ``train.csv`` and ``test.csv.gz``: the bilingual rows in the challenge's training format."""
    d = tmp_path_factory.mktemp("bilingual")
    _write_csv(d / "train.csv", TRAIN_HEADER, bilingual_rows())
    _write_csv(d / "test.csv.gz", TRAIN_HEADER, bilingual_test_rows(), gz=True)
    return d


@pytest.fixture(scope="session")
def joint(bilingual, tmp_path_factory):
    """A joint MLP trained on the bilingual files (with language tokens), saved as a bundle:
    ``(classifier, bundle folder)``.  The multilingual and submission tests share it."""
    import titlecat

    out = tmp_path_factory.mktemp("joint") / "bundle"
    clf = titlecat.train(bilingual / "train.csv", model="mlp", overrides=FAST, output=out, tracking=False,
                         cache_dir=tmp_path_factory.mktemp("cache"))
    return clf, out


def wait_until_answering(url: str, proc, log: Path, what: str, timeout: float, on_timeout=None) -> None:
    """Poll ``GET url`` until it answers 200: a server the test started (``proc``, writing ``log``).
    Fails the test with the end of the log when the process exits or ``timeout`` seconds pass
    (after calling ``on_timeout``, e.g. the server's kill)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited ({proc.returncode}):\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    if on_timeout is not None:
        on_timeout()
    pytest.fail(f"{what} not answering after {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""
