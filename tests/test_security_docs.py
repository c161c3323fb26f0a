"""docs/security.md: every protection it lists names a test, and every test it names exists."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

DOC = ROOT / "docs" / "security.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def test_every_protection_listed_names_a_test_that_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    items = re.split(r"^- ", text, flags=re.MULTILINE)[1:]
    assert len(items) >= 15
    for item in items:
        assert REFERENCE.search(item), f"no test named for: {item[:60]!r}"
    for path, name in REFERENCE.findall(text):
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in defined, f"{path}::{name} does not exist"


def test_the_readme_links_the_security_page() -> None:
    assert "(docs/security.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
