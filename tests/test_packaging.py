"""Packaging: every third-party module mtkit imports is declared (the ones the core needs as
dependencies, the rest in an extra), and the licence has its file."""

import ast
import re
import sys

from conftest import REPO
from mtkit.config import tomllib

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def imported(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module.split(".")[0]}
    return set()


def third_party(core_only: bool) -> set[str]:
    """Modules imported in mtkit/: with ``core_only``, those every command needs (imported at
    module level outside the optional rooms, and numpy wherever Tensor.numpy() is called)."""
    found = set()
    for path in (REPO / "mtkit").rglob("*.py"):
        if core_only and "serve" in path.relative_to(REPO / "mtkit").parts:
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for node in (tree.body if core_only else ast.walk(tree)):
            found |= imported(node)
        if ".numpy()" in text:  # needs numpy installed, though torch does not require it
            found.add("numpy")
    return found - set(sys.stdlib_module_names) - {"mtkit"}


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\s\[]", requirement)[0] for requirement in requirements}


def test_the_core_imports_only_declared_dependencies():
    core = third_party(core_only=True)
    assert {"torch", "numpy", "sacrebleu", "typer"} <= core
    assert core <= names(PROJECT["dependencies"]), core - names(PROJECT["dependencies"])


def test_every_other_import_is_in_an_extra():
    optional = names([r for group in PROJECT["optional-dependencies"].values() for r in group])
    everything = third_party(core_only=False)
    assert everything <= names(PROJECT["dependencies"]) | optional, everything - names(PROJECT["dependencies"]) - optional


def test_the_licence_named_in_pyproject_has_its_file():
    assert PROJECT["license"]["text"] == "MIT"
    assert (REPO / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
