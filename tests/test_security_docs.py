"""The docs' promises name their tests: docs/security.md for every protection it lists, the
operators', scheduling, production and inbound pages in a closing list of the rules people rely
on. Every rule listed names a test, and every test any of these pages names exists."""

from __future__ import annotations

import ast
import re

import pytest

from tests.conftest import ROOT

DOC = ROOT / "docs" / "security.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


# Each page, and how many rules its closing list must name at least.
PROMISES = {"operators.md": 20, "scheduling.md": 12, "production.md": 15, "inbound.md": 10}
SECTION = "## The tests behind these rules"


def _items(text: str) -> list[str]:
    return re.split(r"^- ", text, flags=re.MULTILINE)[1:]


def _every_named_test_exists(text: str) -> None:
    for path, name in REFERENCE.findall(text):
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in defined, f"{path}::{name} does not exist"


def test_every_protection_listed_names_a_test_that_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    items = _items(text)
    assert len(items) >= 15
    for item in items:
        assert REFERENCE.search(item), f"no test named for: {item[:60]!r}"
    _every_named_test_exists(text)


@pytest.mark.parametrize("page", PROMISES)
def test_each_rule_a_page_lists_names_a_test_that_exists(page: str) -> None:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    assert SECTION in text, f"docs/{page} has no {SECTION!r}"
    rules = _items(text.split(SECTION, 1)[1].split("\n## ", 1)[0])
    assert len(rules) >= PROMISES[page], f"docs/{page} lists {len(rules)} rules"
    for rule in rules:
        assert REFERENCE.search(rule), f"docs/{page}: no test named for: {rule[:60]!r}"
    _every_named_test_exists(text)


def test_the_readme_links_the_security_page() -> None:
    assert "(docs/security.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
