"""titlecat as an MLflow model: a pyfunc "model from code" that carries its titlecat bundle.

Every tracked ``titlecat train`` logs one (``model`` in the run's artifacts; ``recipe.finish_run``)::

    model/
        MLmodel                   flavor python_function, signature, input example, params
        titlecat_model.py         three lines: set_model(TitlecatModel())  -- the "model from code"
        artifacts/bundle/         the titlecat bundle (safetensors + JSON, checksummed)
        input_example.json, serving_input_example.json, requirements.txt, python_env.yaml, ...

No pickle anywhere: MLflow runs the three-line file, which builds a ``TitlecatModel``; its
``load_context`` loads the bundle with ``titlecat.load``, checksums first.  So
``mlflow.pyfunc.load_model("runs:/RUN/model")``, ``mlflow models serve -m runs:/RUN/model
--env-manager local``, the Model Registry (``titlecat train --register NAME``) and
``titlecat serve --model models:/NAME@champion`` all use the one bundle.  The environment must
have titlecat installed (``--env-manager local``): ``requirements.txt`` names it, but it is not
on a public package index.

Input: a DataFrame with a ``title`` column (and an optional ``language`` column, for models
trained with ``text.language_token``); over HTTP, ``{"dataframe_records": [{"title": ...}]}``.  Params: ``k`` (categories per
title, default 1) and ``probabilities`` (default false).  Output: a DataFrame with ``category``
(the most probable), plus ``probability`` when asked, plus ``categories`` / ``probabilities``
(the top ``k``, most probable first) when ``k > 1``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from ._version import __version__
from .bundle import BundleError
from .classifier import Classifier, load

BUNDLE = "bundle"  # the artifact name of the titlecat bundle inside the MLflow model
BUNDLE_PATH = f"artifacts/{BUNDLE}"  # where it lies in the model's directory
CODE = '''"""The titlecat MLflow model (models from code): loads the titlecat bundle it carries."""
from mlflow.models import set_model

from titlecat.mlflow_model import TitlecatModel

set_model(TitlecatModel())
'''


class TitlecatModel(PythonModel):
    """The pyfunc model: a titlecat ``Classifier`` loaded from the bundle artifact."""

    def load_context(self, context) -> None:
        self.clf: Classifier = load(context.artifacts[BUNDLE])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predict_frame(self.clf, model_input, params or {})


def predict_frame(clf: Classifier, model_input, params: dict[str, Any]) -> pd.DataFrame:
    """The pyfunc answer of ``clf`` for ``model_input`` (see the module doc)."""
    k, with_probs = int(params.get("k", 1)), bool(params.get("probabilities", False))
    if k < 1:
        raise ValueError(f"params: k must be >= 1, got {k}")
    if isinstance(model_input, pd.DataFrame):
        if "title" not in model_input.columns:
            raise ValueError(f"the input needs a 'title' column; it has {list(model_input.columns)}")
        titles = model_input["title"].tolist()
        langs = model_input["language"].tolist() if "language" in model_input.columns else [None] * len(titles)
    else:
        titles = pd.Series(model_input).tolist() if not isinstance(model_input, str) else [model_input]
        langs = [None] * len(titles)
    langs = [None if lang is None or (isinstance(lang, float) and np.isnan(lang)) else lang for lang in langs]
    labels: list = [None] * len(titles)
    probs = np.zeros((len(titles), min(k, len(clf.labels))), dtype=np.float32)
    for lang in dict.fromkeys(langs):  # one prediction per language, in order of appearance
        rows = [i for i, x in enumerate(langs) if x == lang]
        labs, ps = clf.predict([titles[i] for i in rows], k=k, language=lang)
        for j, i in enumerate(rows):
            labels[i] = list(labs[j])
        probs[rows] = ps
    out = {"category": [labs[0] for labs in labels]}
    if with_probs:
        out["probability"] = probs[:, 0].astype(float)
    if k > 1:
        out["categories"] = labels
        if with_probs:
            out["probabilities"] = [p.astype(float).tolist() for p in probs]
    return pd.DataFrame(out)


def signature():
    """Inputs (``title``, optional ``language``), params (``k``, ``probabilities``) and outputs."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    return ModelSignature(
        inputs=Schema([ColSpec("string", "title"), ColSpec("string", "language", required=False)]),
        outputs=Schema([ColSpec("string", "category"), ColSpec("double", "probability", required=False),
                        ColSpec(Array("string"), "categories", required=False),
                        ColSpec(Array("double"), "probabilities", required=False)]),
        params=ParamSchema([ParamSpec("k", "long", 1), ParamSpec("probabilities", "boolean", False)]),
    )


def save_model(bundle: str | Path, path: str | Path, example_titles: list[str], *, copy_bundle: bool = True) -> Path:
    """Write the MLflow model of the titlecat bundle ``bundle`` into the new directory ``path``;
    ``example_titles`` become its input example.

    The bundle goes to ``path / BUNDLE_PATH``.  ``copy_bundle=False`` leaves it out: the caller
    puts it there itself (``recipe.finish_run`` logs the bundle straight from where it was saved
    into ``model/artifacts/bundle``, rather than copying a model's weights once more first)."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="titlecat-pyfunc-") as tmp:
        code = Path(tmp) / "titlecat_model.py"
        code.write_text(CODE, encoding="utf-8")
        stub = Path(tmp) / BUNDLE  # MLflow names an artifact directory after its source
        stub.mkdir()
        mlflow.pyfunc.save_model(
            str(path), python_model=str(code), artifacts={BUNDLE: str(stub)}, signature=signature(),
            input_example=pd.DataFrame({"title": example_titles}),
            # named, not inferred: inferring loads the model in a subprocess (seconds to minutes)
            pip_requirements=[f"titlecat=={__version__}"],
            metadata={"titlecat_version": __version__})
    target = Path(path) / BUNDLE_PATH
    shutil.rmtree(target, ignore_errors=True)
    if copy_bundle:
        shutil.copytree(bundle, target)
    return Path(path)


def bundle_in(model_dir: str | Path) -> Path:
    """The titlecat bundle inside a (downloaded) MLflow model directory; ``BundleError`` if it is
    not a titlecat MLflow model."""
    import yaml

    model_dir = Path(model_dir)
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise BundleError(f"{model_dir}: no MLmodel file; not an MLflow model")
    try:
        flavor = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))["flavors"]["python_function"]
        path = model_dir / flavor["artifacts"][BUNDLE]["path"]
    except (KeyError, TypeError, yaml.YAMLError):
        raise BundleError(f"{mlmodel}: not a titlecat MLflow model (no '{BUNDLE}' artifact); log one with "
                          "titlecat train") from None
    return path
