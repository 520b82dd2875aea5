"""Architecture rules, enforced by reading the source (STYLE: a test walks the source and fails on
forbidden imports).

* The pure core imports no asyncio, aiohttp, sqlite, os, time, socket, subprocess or randomness.
* monitor/ and the offline auditor use only the public library: never tlog.server.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

PURE = ["errors", "hashing", "tree", "proof", "tiles", "note", "checkpoint", "cosignature",
        "tlogproof", "keys", "entry", "registry", "witness"]
FORBIDDEN_IN_PURE = {"asyncio", "aiohttp", "sqlite3", "aiosqlite", "os", "time", "socket",
                     "subprocess", "random", "secrets", "threading", "multiprocessing", "datetime",
                     "pathlib", "io", "shutil", "tempfile", "urllib", "http", "requests"}
ALLOWED_THIRD_PARTY = {"cryptography", "nacl"}


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize("name", PURE)
def test_pure_core_imports(name: str) -> None:
    path = ROOT / "tlog" / f"{name}.py"
    if not path.exists():
        pytest.fail(f"pure module tlog/{name}.py is missing")
    for mod in imported_modules(path):
        top = mod.lstrip(".").split(".")[0]
        if mod.startswith("."):
            sibling = mod.lstrip(".").split(".")[0]
            assert sibling in PURE, f"tlog/{name}.py imports non-pure sibling {mod}"
            continue
        assert top not in FORBIDDEN_IN_PURE, f"tlog/{name}.py imports {mod}"
        if top == "tlog":
            assert mod.split(".")[1] in PURE, f"tlog/{name}.py imports non-pure {mod}"
            continue
        import sys
        assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, \
            f"tlog/{name}.py imports third-party {mod}"
    if name != "keys":
        assert not any(m.split(".")[0] == "nacl" for m in imported_modules(path)), \
            f"only tlog/keys.py may use nacl ({name})"


def _py_files(folder: str) -> list[pathlib.Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _py_files("monitor") + [ROOT / "tlog" / f"{name}.py" for name in
                                                         ("audit", "logaudit", "export")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_monitor_and_auditor_use_public_library_only(path: pathlib.Path) -> None:
    if not path.exists():
        pytest.skip("not written yet")
    for mod in imported_modules(path):
        assert not mod.startswith("tlog.server"), f"{path.name} imports server internals: {mod}"
        assert not (path.parent.name == "monitor" and mod.startswith(".") and "server" in mod)


def test_core_does_not_import_server() -> None:
    for name in PURE:
        path = ROOT / "tlog" / f"{name}.py"
        if path.exists():
            assert not any("server" in m for m in imported_modules(path))
