"""The package's shape: the import-linter contracts of pyproject.toml hold, every module sits in
a layer, the import graph has no cycle, and nothing outside the registry asks a model's kind."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
SRC = ROOT / "src" / "titlecat"


def _layers() -> list[str]:
    (contract,) = [c for c in tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
                   if c["type"] == "layers"]
    return [name.strip() for layer in contract["layers"] for name in re.split(r"[|:]", layer)]


def test_the_import_linter_contracts_hold(capsys):
    """Layers from the data modules at the bottom to the CLI at the top, and mlflow imported by
    ``tracking`` alone (the contracts are in pyproject.toml; ``lint-imports`` prints why one broke)."""
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0, capsys.readouterr().out


def test_every_module_is_in_a_layer():
    """A new module must be placed in a layer, or the contract would not constrain it."""
    graph = grimp.build_graph("titlecat")
    packages = {"titlecat", "titlecat.models"}  # their __init__ only gathers the public names
    listed = {f"titlecat.{name}" for name in _layers()}
    assert sorted(graph.modules - packages - listed) == []
    assert sorted(listed - graph.modules) == []  # and the contract names no module that is gone


def test_the_import_graph_has_no_cycle():
    """No module imports, directly or not, a module that imports it (not even through a package's
    ``__init__``), so no import has to hide at the bottom of a file."""
    graph = grimp.build_graph("titlecat")
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i.startswith("titlecat")}
             for m in graph.modules}
    state: dict[str, int] = {}  # 1: on the path being explored, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(edges[module]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [module, nxt]))
            if nxt not in state:
                visit(nxt, path + [module])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


def test_no_module_imports_at_its_bottom():
    """Imports are at the top of a module or inside a function (lazy, for start-up time), never
    after the code of a module to close a cycle."""
    for path in SRC.rglob("*.py"):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        last_code = max((i for i, node in enumerate(body)
                         if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr))), default=-1)
        late = [node.lineno for node in body[last_code + 1:] if isinstance(node, (ast.Import, ast.ImportFrom))]
        first_code = next((i for i, node in enumerate(body)
                           if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr))), len(body))
        between = [node.lineno for node in body[first_code:] if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert not late and not between, f"{path.relative_to(ROOT)}: module-level import at line {(late or between)[0]}"


MODEL_KINDS = ("NeuralModel", "TfidfModel", "EnsembleModel", "Ensemble", "TitleModel")


def test_only_the_models_ask_which_kind_of_model_they_hold():
    """Outside ``titlecat/models`` no code tests a model's class or branches on a model's name:
    the recipe, the classifier, the bundle and the CLI use the model protocol and the registry."""
    offences = []
    for path in SRC.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} | \
                        {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                if names & set(MODEL_KINDS) or any(n.endswith("Config") and n not in ("Config", "BaseModelConfig") for n in names):
                    offences.append(f"{path.name}:{node.lineno}: isinstance on a model kind")
            sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
            if any(isinstance(s, ast.Attribute) and s.attr == "name" and "model" in ast.unparse(s.value)
                   for s in sides) and any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides):
                offences.append(f"{path.name}:{node.lineno}: a branch on the model's name")
    assert offences == []
