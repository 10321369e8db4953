"""ARCHITECTURE.md stays true and on one screen: every path it names exists, it fits (60 lines of at most 160
characters), the map lives there only (README.md links to it), and ui never imports pages (the layering it draws)."""

from __future__ import annotations

import re
from pathlib import Path

from test_layers import graph

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "ARCHITECTURE.md"
PATH_LIKE = re.compile(r"`([\w./-]+\.(?:py|js|css|md|sh|toml)|[\w-]+/(?:[\w-]+/)*)`")


def documented_paths(text: str) -> list[str]:
    """Backticked file and folder paths: `ui/state.py`, `icl_core/tasks/`, `timeline.js` (a bare name is looked for
    in the folder named last before it on the same line), `ui/*_charts.py` (a glob that must match)."""
    return PATH_LIKE.findall(text)


def exists(path: str, context: str) -> bool:
    if "*" in path:
        return any(ROOT.glob(path))
    if (ROOT / path).exists():
        return True
    folders = re.findall(r"`((?:[\w-]+/)+)[\w.*-]*`", context)  # a bare file name: in a folder the line names
    return any((ROOT / folder / path).exists() for folder in folders) or any(ROOT.rglob(f"*/{path}"))


def test_every_documented_path_exists() -> None:
    missing = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        for path in documented_paths(line.replace("ui/*_charts.py", "")):
            if not exists(path, line):
                missing.append(path)
    assert missing == [], f"ARCHITECTURE.md names paths that are not there: {missing}"
    assert any(ROOT.glob("ui/*_charts.py"))


def test_the_drift_check_catches_a_stale_path() -> None:
    assert not exists("ui/gone.py", "| `ui/` | `gone.py` |") and not exists("training/train.evaluate", "")
    assert exists("state.py", "| `ui/` | `state.py` |") and exists("ui/state.py", "")


def test_it_fits_on_one_screen_and_the_readme_links_instead_of_repeating() -> None:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 60, f"{len(lines)} lines"
    assert max(len(line) for line in lines) <= 160
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](ARCHITECTURE.md)" in readme
    assert "icl_core/           the library" not in readme, "the README repeats the module map"


def test_ui_never_imports_pages() -> None:
    bad = {m: sorted(d for d in deps if d.startswith("pages")) for m, deps in graph().items() if m.startswith("ui")}
    assert {m: d for m, d in bad.items() if d} == {}


def page_globals_read_by_functions(source: str) -> dict[str, list[str]]:
    """For each function of a page, the page's own lower-case module-level names it reads in its body (its
    parameters' defaults are read where the function is defined, in reading order, so they do not count)."""
    import ast

    tree = ast.parse(source)
    assigned: set[str] = set()
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            assigned.update(n.id for n in names if isinstance(n, ast.Name) and not n.id[0].isupper())
    found: dict[str, list[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        params = {a.arg for a in [*node.args.args, *node.args.kwonlyargs]}
        body = [n for stmt in node.body for n in ast.walk(stmt)]
        local = {n.id for n in body if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        read = {n.id for n in body if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        if bad := sorted((read & assigned) - params - local):
            found[node.name] = bad
    return found


def test_pages_read_top_to_bottom() -> None:
    """A page's sections take their inputs as arguments: a function reading a name the page assigns further on
    (`info`, `sel`, ...) could not be read in the order the page runs."""
    found = {
        path.name: bad
        for path in sorted((ROOT / "pages").glob("*.py"))
        if (bad := page_globals_read_by_functions(path.read_text(encoding="utf-8")))
    }
    assert found == {}
    # ...and every page runs the same bootstrap (ARCHITECTURE.md: the sidebar's run and step pickers).
    pages = sorted((ROOT / "pages").glob("*.py"))
    assert pages and [p.name for p in pages if "state.ensure_sidebar()" not in p.read_text(encoding="utf-8")] == []
    assert page_globals_read_by_functions("sel = 1\ndef f():\n    return sel\n") == {"f": ["sel"]}
    assert page_globals_read_by_functions("sel = 1\ndef f(s=sel):\n    return s\n") == {}
