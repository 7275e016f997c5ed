"""The docs are current: every file, folder and module the README and docs/ name exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.fixtures.docs import where_to_look

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = ("edge", "cloud", "shared", "simulator", "devstack", "smaint", "ui", "bench", "tests",
       "firmware", "mosquitto", "scripts", "docs", "evaluation", "deploy")
# A path as docs write it: a top-level folder, then path segments; globs and <placeholders>
# are not paths to check.
_ANY_TOP = "|".join(TOP)
_PATH = re.compile(rf"(?<![\w./-])((?:{_ANY_TOP})/(?!v1/)[\w./-]*[\w/])")  # smaint/v1/...: a topic
_PKG = "|".join((*TOP[:7], "evaluation"))
_MODULE = re.compile(rf"(?<![\w./-])((?:{_PKG})(?:\.[a-z_][a-z0-9_]*)+)")


def _names(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        for match in pattern.finditer(doc.read_text()):
            found.append((doc.name, match.group(1)))
    return found


def test_docs_exist() -> None:
    assert (REPO / "docs" / "architecture.md").exists()


@pytest.mark.parametrize(("doc", "path"), _names(_PATH))
def test_every_path_named_in_the_docs_exists(doc: str, path: str) -> None:
    assert (REPO / path.rstrip("/")).exists(), f"{doc} names {path}, which does not exist"


@pytest.mark.parametrize(("doc", "module"), _names(_MODULE))
def test_every_module_named_in_the_docs_exists(doc: str, module: str) -> None:
    # A dotted name may end in an attribute (cloud.notify.verify_signature): the longest
    # importable prefix must be a module and the rest an attribute of it.
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        if (REPO / name.replace(".", "/")).with_suffix(".py").exists() or (
            REPO / name.replace(".", "/") / "__init__.py"
        ).exists():
            rest = parts[cut:]
            if rest:
                mod = importlib.import_module(name)
                obj: object = mod
                for attr in rest:
                    assert hasattr(obj, attr), f"{doc} names {module}: {name} has no {attr}"
                    obj = getattr(obj, attr)
            return
    pytest.fail(f"{doc} names module {module}, which does not exist")


def test_the_readme_addresses_the_demo_test_opens_are_found() -> None:
    # tests/test_devstack.py opens each of these against a running demo; a README rewrite
    # that the parser no longer reads must not leave that check with nothing to open.
    found = where_to_look()
    assert {service for service, _ in found} == {"cloud", "gateway", "mlflow"}
    assert ("cloud", "/api/v1/readings/buckets?device=motor-001&metric=temperature_c") in found
    assert all(path.startswith("/") and "<" not in path for _, path in found), found
