"""The package's layering, as ARCHITECTURE.md draws it: pages -> ui -> icl_core, and inside icl_core
model -> storage -> analysis -> training -> tasks, with no import cycle between modules."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("icl_core.model", "icl_core.storage", "icl_core.analysis", "icl_core.training", "icl_core.tasks")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@functools.cache
def known_modules() -> frozenset[str]:
    # Only the package folders: a glob from the root would walk .venv too (37 s a test in a fresh clone).
    return frozenset(module_name(p) for d in ("icl_core", "ui", "pages") for p in (ROOT / d).rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """The icl_core/ui modules a file imports (function-level imports included: they are imports too)."""
    modules = known_modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] in ("icl_core", "ui", "pages")}


def graph() -> dict[str, set[str]]:
    files = [p for d in ("icl_core", "ui") for p in (ROOT / d).rglob("*.py")]
    return {module_name(p): imports_of(p) for p in files}


def layer(module: str) -> int | None:
    return next((i for i, prefix in enumerate(LAYERS) if module.startswith(prefix)), None)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself again, with one such path."""
    found = []
    for start in g:
        seen, stack = set(), [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in g.get(node, ()):
                if nxt == start:
                    found.append(path)
                    stack = []
                    break
                if nxt not in seen and nxt in g:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def test_icl_core_never_imports_streamlit_ui_or_pages() -> None:
    bad = {
        m: sorted(d for d in deps if not d.startswith("icl_core"))
        for m, deps in graph().items()
        if m.startswith("icl_core")
    }
    assert {m: d for m, d in bad.items() if d} == {}
    for path in (ROOT / "icl_core").rglob("*.py"):
        assert "import streamlit" not in path.read_text(), path


def test_no_upward_imports_inside_icl_core() -> None:
    upward = [
        (m, d)
        for m, deps in graph().items()
        for d in deps
        if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_checks_catch_what_they_look_for() -> None:
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) and not cycles({"a": {"b"}, "b": set()})
    assert layer("icl_core.storage.hub") < layer("icl_core.analysis.phase") < layer("icl_core.tasks.jobs")


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80  # issue 25: small modules with one job, functions read at a glance


def test_modules_and_functions_stay_small() -> None:
    """Every module outside tests/ under 450 lines and every function under 80, so each reads on a screen or two."""
    files = [p for d in ("icl_core", "ui", "pages", "benchmarks", "scripts") for p in (ROOT / d).rglob("*.py")]
    files += [ROOT / "app.py", ROOT / "explorer.py"]
    too_long = []
    for path in files:
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert len(files) > 60 and not too_long, too_long
