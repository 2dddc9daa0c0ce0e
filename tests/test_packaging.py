"""Packaging: every third-party module mtkit uses is declared, and the licence has its file."""

import ast
import re
import sys

from conftest import REPO
from mtkit.config import tomllib


def used_modules() -> set[str]:
    """Top-level modules imported anywhere in mtkit/, numpy where torch's bridge to it is used."""
    found = set()
    for path in (REPO / "mtkit").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        if ".numpy()" in text:  # Tensor.numpy() needs numpy installed
            found.add("numpy")
    return found - set(sys.stdlib_module_names) - {"mtkit"}


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\s\[]", requirement)[0] for requirement in requirements}


def test_every_third_party_module_is_a_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = names(project["dependencies"])
    optional = names([r for group in project["optional-dependencies"].values() for r in group])
    used = used_modules()
    assert {"torch", "numpy", "sacrebleu"} <= used
    assert used <= declared | optional, used - declared - optional
    assert used - declared <= {"matplotlib"}  # the only optional one: `mtkit plot`, --attention-png


def test_the_licence_named_in_pyproject_has_its_file():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"]["text"] == "MIT"
    assert (REPO / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
