"""Layers (SPEC §3): usage never imports the layer above, control flows the way the imports do, and
no production module imports the demo."""

import ast

import pytest

from tests.conftest import ROOT


def _imports(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize(
    "path", sorted((ROOT / "usage").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_usage_never_imports_billing(path):
    assert [m for m in _imports(path) if m == "billing" or m.startswith("billing.")] == []


def test_usage_defines_no_signal_and_no_registry_for_the_layer_above():
    for path in (ROOT / "usage").rglob("*.py"):
        text = path.read_text()
        assert "Signal(" not in text, path
        assert "_register(" not in text, path


@pytest.mark.parametrize(
    "path",
    sorted([*(ROOT / "usage").rglob("*.py"), *(ROOT / "billing").rglob("*.py")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_production_module_imports_the_demo(path):
    assert [m for m in _imports(path) if m == "demo" or m.startswith("demo.")] == []
