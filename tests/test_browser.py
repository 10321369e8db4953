"""Every page of the explorer in a real browser: headless Debian chromium driven by playwright.

One `streamlit run app.py` server (data dir in a temp folder, Hub offline) serves the whole session; one
browser tab visits the pages by clicking the sidebar navigation, like a user. For each page it waits for
the script to finish, checks there is no traceback and that the headings written in the page's source are
on screen, does the page's key interaction where there is one, and saves a full-page screenshot to
docs/screenshots/<page>.png.

The page list is the literal PAGES list the app navigates (ui/nav.py; files that exist) and must match the
sidebar; headings are read from each page's source, so pages can change without editing this file. Missing
chromium or playwright is a failure, not a skip: ./test.sh installs both.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from conftest import shipped_induction_head, shipped_last_step

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SMALLEST_RUN = ROOT / "checkpoints" / "attn1"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1400, "height": 900}
MAX_SHOT_HEIGHT = 8000  # px: a full page taller than this is cut (the file would be huge)

APP_IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
MAIN = "[data-testid='stMain']"
HEAD_PICK = "[data-testid='stButtonGroup'] button"  # the Ablation page's heads, one multi-select per layer
NAV_LINK = "[data-testid='stSidebarNav'] a[data-testid='stSidebarNavLink']"
EXCEPTION = "[data-testid='stException']"
ERROR_ALERT = "[data-testid='stAlertContentError']"
CHART = "[data-testid='stVegaLiteChart']"
TIMELINE = ".icl-tl[data-ready='1']"  # inside the component's open shadow root: playwright's CSS pierces it

SERVER_START_S = 60  # until /_stcore/health answers "ok"
FIRST_RUN_S = 60  # the first script run imports torch and loads a model
RUN_S = 30  # any later script run


# --------------------------------------------------------------------------------------------------------------
# What the pages should show, read from the source


@dataclass(frozen=True)
class PageSpec:
    path: str  # "pages/attention.py"
    title: str  # the sidebar label given in ui/nav.py

    @property
    def name(self) -> str:
        return Path(self.path).stem


def registered_pages() -> list[PageSpec]:
    """The literal PAGES = [(file, title, icon), ...] list (explorer.py or ui/*.py), keeping files that exist, as the
    app does before handing them to st.navigation."""
    for source in [ROOT / "explorer.py", *sorted((ROOT / "ui").glob("*.py"))]:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and t.id == "PAGES" for t in targets):
                entries = ast.literal_eval(node.value)
                return [PageSpec(path, title) for path, title, *_ in entries if (ROOT / path).is_file()]
    raise AssertionError("no literal PAGES = [(file, title, icon), ...] list in explorer.py or ui/*.py")


def _literal_text(node: ast.expr) -> str | None:
    """A heading's text: a string constant, or an f-string's literal text up to its first placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        prefix = ""
        for part in node.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            prefix += part.value
        return prefix if len(prefix.strip()) >= 6 else None
    return None


def _always_run_calls(path: str) -> list[ast.Call]:
    """`st.<name>(...)` calls that run on every visit: at module level or inside `with` blocks only (anything
    under if/for/try/def may not run), in source order."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    calls: list[ast.Call] = []

    def visit(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.With):
                visit(stmt.body)
            elif isinstance(stmt, ast.Expr) and isinstance(call := stmt.value, ast.Call):
                func = call.func
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "st":
                    calls.append(call)

    visit(tree.body)
    return calls


def page_headings(path: str) -> list[str]:
    """Texts of the st.title/header/subheader calls that always run; the title (st.title) first."""
    found = [
        (0 if call.func.attr == "title" else 1, text)
        for call in _always_run_calls(path)
        if call.func.attr in ("title", "header", "subheader") and call.args and (text := _literal_text(call.args[0]))
    ]
    found.sort(key=lambda item: item[0])  # stable: the title first, then the headers in source order
    return [text for _, text in found]


def page_title(path: str) -> str | None:
    """The text of the page's st.title call, if it always runs."""
    calls = [c for c in _always_run_calls(path) if c.func.attr == "title" and c.args]
    return _literal_text(calls[0].args[0]) if calls else None


def page_chart_count(path: str) -> int:
    """How many Altair / Vega-Lite charts the page always draws."""
    return sum(call.func.attr in ("altair_chart", "vega_lite_chart") for call in _always_run_calls(path))


def normalize(text: str) -> str:
    """Compare headings as a reader sees them: no markdown emphasis marks, one space between words."""
    return " ".join(re.sub(r"[*_`]", "", text).split())


PAGES = registered_pages()


# --------------------------------------------------------------------------------------------------------------
# The server and the browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def server_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's ICL_DATA_DIR: user runs, jobs and the Hub cache go here, not into the repo."""
    return tmp_path_factory.mktemp("icl_data")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, server_data_dir: Path) -> Iterator[tuple[str, Path]]:
    """`streamlit run app.py` on a free port; yields (base URL, log file). Always killed at teardown."""
    data = server_data_dir
    log_path = tmp_path_factory.mktemp("streamlit_log") / "streamlit.log"
    port = _free_port()
    exe = ROOT / ".venv" / "bin" / "streamlit"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "streamlit"]
    cmd += [
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--global.developmentMode",
        "false",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",  # as on the Space (Dockerfile): no Deploy button in the screenshots
    ]
    env = {**os.environ, "ICL_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    env.pop("ICL_EXTRA_RUNS_DIRS", None)
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode} before serving:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{url}/_stcore/health did not answer 'ok' within {SERVER_START_S}s:\n{_tail(log_path)}")
            time.sleep(0.3)
        yield url, log_path
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass
class Browser:
    page: Any  # playwright.sync_api.Page
    url: str
    log: Path
    js_errors: list[str] = field(default_factory=list)

    def wait_idle(self, timeout_s: float = RUN_S) -> None:
        self.page.wait_for_selector(APP_IDLE, timeout=timeout_s * 1000)

    def main_text(self) -> str:
        return self.page.locator(MAIN).inner_text()

    def headings(self) -> list[str]:
        return [normalize(t) for t in self.page.locator(f"{MAIN} :is(h1, h2, h3)").all_inner_texts()]

    def assert_healthy(self, context: str) -> None:
        """No traceback, no uncaught JavaScript error and no st.error message on the page."""
        exceptions = self.page.locator(EXCEPTION).all_inner_texts()
        assert not exceptions, f"{context}: the page shows an exception:\n" + "\n---\n".join(exceptions)
        assert not self.js_errors, f"{context}: JavaScript errors in the page: {self.js_errors}"
        errors = self.page.locator(ERROR_ALERT).all_inner_texts()
        assert not errors, f"{context}: the page shows st.error messages: {errors}"

    def describe(self) -> str:
        """What is on screen, for a failure message: a screenshot next to the server log, and the text."""
        shot = self.log.parent / f"failure-{time.monotonic_ns()}.png"
        self.page.screenshot(path=str(shot))
        text = " | ".join(self.main_text().split("\n"))[:1500]
        return f"screenshot {shot}; server log {self.log}; page text: {text}"

    def screenshot(self, name: str) -> Path:
        """A full-page PNG. Streamlit scrolls inside its own container, so grow the viewport to fit it first."""
        height = self.page.evaluate(
            """() => Math.max(...["[data-testid='stMain']", "[data-testid='stAppViewContainer']",
                                  "[data-testid='stAppScrollToBottomContainer']", "[data-testid='stSidebar']"]
                .map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight),
                document.documentElement.scrollHeight)"""
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        out = SCREENSHOTS / f"{name}.png"
        self.page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, 900), MAX_SHOT_HEIGHT)})
        try:
            self.page.wait_for_timeout(600)  # charts re-layout to the taller viewport
            self.page.screenshot(path=str(out), full_page=True)
        finally:
            self.page.set_viewport_size(VIEWPORT)
        return out


@pytest.fixture(scope="session")
def browser(server: tuple[str, Path]) -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (./test.sh does: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed ({exc}): pip install -r requirements-dev.txt (./test.sh does)")
    url, log = server
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = chromium.new_context(viewport=VIEWPORT)
            page = context.new_page()
            page.set_default_timeout(RUN_S * 1000)
            b = Browser(page, url, log)
            page.on("pageerror", lambda exc: b.js_errors.append(str(exc)))
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector(NAV_LINK, timeout=FIRST_RUN_S * 1000)
            b.wait_idle(FIRST_RUN_S)
            yield b
        finally:
            chromium.close()


def pressed(button: Any) -> bool:
    """Whether a head's button on the Ablation page is selected (ablated)."""
    return button.get_attribute("aria-pressed") == "true"


def wait_until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.25)


def open_page(b: Browser, spec: PageSpec) -> list[str]:
    """Click the page's sidebar link, wait for its title and for the script to finish; return the headings."""
    page = b.page
    more = page.locator("[data-testid='stSidebarNavViewButton']")
    if more.count() and "more" in more.first.inner_text().lower():
        more.first.click()
    link = page.locator(NAV_LINK).filter(has_text=spec.title)
    assert link.count() == 1, f"sidebar has {link.count()} links labelled {spec.title!r}"
    href = link.get_attribute("href")
    link.click()
    if href:
        # The app writes the shared run/step into the query string: compare the path only.
        target = href.split("?")[0]
        page.wait_for_url(lambda url: url.split("?")[0] == target)
    expected = page_headings(spec.path)
    if (title := page_title(spec.path)) is not None:
        # The new page's title (h1) replaces the old one's once its script has run that far.
        title = normalize(title)
        titles = page.locator(f"{MAIN} h1")
        wait_until(
            lambda: any(normalize(h).startswith(title) for h in titles.all_inner_texts()),
            RUN_S,
            f"title {title!r} of {spec.path}",
        )
    b.wait_idle()
    # Settle: a page may rerun once more right away (a callback, a fragment); wait for that run too.
    page.wait_for_timeout(300)
    b.wait_idle()
    return expected


# --------------------------------------------------------------------------------------------------------------
# Page-specific checks: run after the generic ones. Pages without an entry get only the generic checks.


def check_charts(b: Browser, minimum: int = 1) -> None:
    """At least `minimum` Vega-Lite charts, each drawn (a canvas or svg of a real size)."""
    charts = b.page.locator(CHART)
    wait_until(lambda: charts.count() >= minimum, RUN_S, f"{minimum} chart(s), found {charts.count()}")
    for i in range(charts.count()):
        drawn = charts.nth(i).locator(":is(canvas, svg)").first
        drawn.wait_for(state="attached", timeout=RUN_S * 1000)
        box = wait_until(
            lambda d=drawn: (bb := d.bounding_box()) and bb["width"] > 50 and bb["height"] > 50 and bb,
            RUN_S,
            f"chart {i} to be drawn",
        )
        assert box, f"chart {i} not drawn"


def check_phase_change(b: Browser) -> None:
    check_charts(b, minimum=max(1, page_chart_count("pages/phase_change.py")))


def check_attention(b: Browser) -> None:
    check_charts(b, minimum=max(1, page_chart_count("pages/attention.py")))  # the heatmaps, the loss bars
    page = b.page
    box = page.locator(f"{MAIN} [data-testid='stTextArea'] textarea, {MAIN} [data-testid='stTextInput'] input").first
    view = page.locator(f"{MAIN} h3").filter(has_text="Where each head looks")
    before = view.first.inner_text() if view.count() else None
    sequence = "Zebra quilts jump. Zebra quilts jump."
    # Type it like a user (select all, type over). A text area applies on Ctrl+Enter (plain Enter types a
    # newline), a text input on Enter. (fill() followed at once by Ctrl+Enter applies an empty text: too fast.)
    box.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(sequence)
    page.keyboard.press("Control+Enter" if box.evaluate("e => e.tagName") == "TEXTAREA" else "Enter")
    box.evaluate("e => e.blur()")  # no focus ring in the screenshot

    def updated() -> bool:
        # The per-token view spells out the text up to the destination token (one span per byte, spaces as ␣).
        squashed = re.sub(r"\s", "", b.main_text())
        return "Zebra" in squashed and "quilts" in squashed and page.locator(APP_IDLE).count() == 1

    try:
        wait_until(updated, RUN_S, "the attention view to show the typed sequence")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {b.describe()}") from None
    b.wait_idle()
    if before is not None:
        after = view.first.inner_text()
        assert after != before, f"the destination-token heading did not change: {after!r}"
    # The text's views rerun on their own (a fragment), the link follows them: the text and its destination token.
    link = parse_qs(urlparse(page.url).query)
    assert link.get("text") == [sequence] and link.get("dest", [""])[0].isdigit(), page.url
    check_charts(b)


def check_ablation(b: Browser) -> None:
    page = b.page
    metrics = page.locator(f"{MAIN} [data-testid='stMetricValue']")
    wait_until(lambda: metrics.count() > 0, RUN_S, "the loss metrics")
    toggles = page.locator(f"{MAIN} {HEAD_PICK}").filter(has_text=re.compile(r"L\d+H\d+"))
    labels = toggles.all_inner_texts()
    assert labels, "no head buttons (L<layer>H<head>) on the ablation page"

    def pm(label: str) -> float:
        match = re.search(r"·\s*([0-9.]+)", label)
        return float(match.group(1)) if match else -1.0

    # The head with the highest prefix-matching score: ablating it moves the losses the most.
    index = max(range(len(labels)), key=lambda i: (pm(labels[i]), i))
    head = re.search(r"L\d+H\d+", labels[index]).group(0)
    toggle = toggles.nth(index)
    assert not pressed(toggle), f"{head} starts ablated"
    before = metrics.all_inner_texts()
    toggle.click()

    def changed() -> bool:
        return page.locator(APP_IDLE).count() == 1 and metrics.all_inner_texts() != before

    try:
        wait_until(changed, RUN_S, f"a loss metric to change after ablating {head}")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: metrics stayed {before}; head selected={pressed(toggle)}; {b.describe()}"
        ) from None
    b.wait_idle()
    assert pressed(toggle), f"{head} was not selected"
    assert any(head in h for h in b.headings()), f"no heading names the ablated head {head}: {b.headings()}"


PAGE_CHECKS: dict[str, Callable[[Browser], None]] = {
    "phase_change": check_phase_change,
    "attention": check_attention,
    "ablation": check_ablation,
    # TODO(models): once pages/models.py settles, check its run table and the Hub download form (offline here).
    # TODO(train): check the preset form renders; starting a job is covered by tests/test_train_page.py.
}


# --------------------------------------------------------------------------------------------------------------
# Tests


def test_first_visit_on_a_deep_link_keeps_its_first_click(server: tuple[str, Path]) -> None:
    """The server's very first session opens a page's link directly (Streamlit then runs the page file alone);
    the visitor's first click on a head toggle must count. Must run first in this file: it needs a fresh server."""
    from playwright.sync_api import sync_playwright

    url, log = server
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = chromium.new_context(viewport=VIEWPORT).new_page()
            page.set_default_timeout(RUN_S * 1000)
            head = shipped_induction_head()
            page.goto(f"{url}/ablation?run=attn2&step={shipped_last_step()}", wait_until="domcontentloaded")
            toggle = page.locator(f"{MAIN} {HEAD_PICK}").filter(has_text=re.compile(f"^{head}"))
            toggle.first.wait_for(timeout=FIRST_RUN_S * 1000)
            page.wait_for_selector(APP_IDLE, timeout=FIRST_RUN_S * 1000)
            page.wait_for_timeout(2000)
            assert not pressed(toggle.first)
            toggle.first.click()
            wait_until(lambda: pressed(toggle.first), RUN_S, f"the first click to switch {head} on")
            page.wait_for_selector(APP_IDLE)
            page.wait_for_timeout(1000)  # a rerun that dropped the click would switch it back off
            assert pressed(toggle.first), f"the first click was lost; server log {log}"
        finally:
            chromium.close()


def test_sidebar_lists_every_page(browser: Browser) -> None:
    labels = [normalize(t) for t in browser.page.locator(NAV_LINK).all_inner_texts()]
    titles = [normalize(p.title) for p in PAGES]
    # A link's text also holds its icon's ligature name (e.g. "school"), so match by containment, in order.
    assert len(labels) == len(titles), f"sidebar links {labels} vs the navigation's pages {titles}"
    for label, title in zip(labels, titles, strict=True):
        assert title in label, f"sidebar link {label!r} should be {title!r}"
    orphans = sorted({str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py")} - {p.path for p in PAGES})
    assert not orphans, f"page files not in the app's navigation: {orphans}"


def test_a_run_that_appears_while_the_train_page_is_open_reaches_the_picker_without_a_reload(
    browser: Browser, server_data_dir: Path
) -> None:
    """A training job's run folder appears on disk; the Train page's timed fragment must rerun the app so the
    sidebar's run picker lists it, with no reload by the visitor."""
    page = browser.page
    page.goto(f"{browser.url}/train", wait_until="domcontentloaded")
    browser.wait_idle()
    picker = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first

    def options() -> list[str]:
        picker.click()
        texts = page.locator("[data-testid='stSelectboxVirtualDropdown'] li, [role='option']").all_inner_texts()
        page.keyboard.press("Escape")
        return [normalize(t) for t in texts]

    assert not any("fresh-run" in o for o in options())
    source = SHIPPED_SMALLEST_RUN
    target = server_data_dir / "runs" / "fresh-run"
    target.mkdir(parents=True)
    try:
        for path in sorted(source.glob("step_00000[0-3].*")) + [source / "run.json"]:
            shutil.copy(path, target / path.name)
        wait_until(lambda: any("fresh-run" in o for o in options()), 20, "the new run in the sidebar's run picker")
        browser.assert_healthy("train page after a run appeared")
    finally:
        shutil.rmtree(target)  # the pages' screenshots, taken later in this session, show the shipped runs only


@pytest.mark.parametrize("spec", PAGES, ids=[p.name for p in PAGES])
def test_page(browser: Browser, spec: PageSpec) -> None:
    started = time.monotonic()
    expected = open_page(browser, spec)
    browser.assert_healthy(f"{spec.path} on load")
    shown = browser.headings()
    missing = [h for h in expected if not any(normalize(h) in s for s in shown)]
    assert not missing, f"{spec.path}: headings from the source not on screen: {missing}; shown: {shown}"
    if charts := page_chart_count(spec.path):
        check_charts(browser, charts)
    check = PAGE_CHECKS.get(spec.name)
    if check is not None:
        check(browser)
        browser.assert_healthy(f"{spec.path} after interacting")
    shot = browser.screenshot(spec.name)
    assert shot.stat().st_size > 10_000, f"{shot} looks empty"
    print(f"{spec.path}: {time.monotonic() - started:.1f}s, screenshot {shot.relative_to(ROOT)}")


# Elements whose right edge passes the viewport and that no scrolling box of the page clips: what makes a
# phone's page scroll sideways.
_OVERFLOW_JS = """() => {
  const out = [];
  for (const e of document.querySelectorAll('[data-testid=stMain] *')) {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.right <= window.innerWidth + 1) continue;
    let p = e.parentElement, clipped = false;
    while (p) {
      const s = getComputedStyle(p);
      const scrolls = ['auto', 'scroll', 'hidden'].includes(s.overflowX);
      if (scrolls && p.getBoundingClientRect().right <= window.innerWidth + 1) { clipped = true; break; }
      p = p.parentElement;
    }
    if (!clipped) out.push((e.getAttribute('data-testid') || e.tagName) + ' ends at ' + Math.round(r.right) + 'px');
  }
  return out.slice(0, 10);
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_narrow_screens_and_both_themes(browser: Browser, scheme: str) -> None:
    """At 400 px wide, in the OS's light and dark themes: no page scrolls sideways; token strips stay readable."""
    context = browser.page.context.browser.new_context(viewport={"width": 400, "height": 900}, color_scheme=scheme)
    try:
        page = context.new_page()
        page.set_default_timeout(RUN_S * 1000)
        for path in ("attention", "ablation", "phase_change"):
            page.goto(f"{browser.url}/{path}?run=attn2&step={shipped_last_step()}", wait_until="domcontentloaded")
            page.wait_for_selector(f"{MAIN} h1", timeout=FIRST_RUN_S * 1000)
            page.wait_for_selector(APP_IDLE, timeout=FIRST_RUN_S * 1000)
            page.wait_for_timeout(1500)  # charts lay out after the script is done
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 401, path
            assert page.evaluate(_OVERFLOW_JS) == [], (scheme, path)
            if path in ("attention", "phase_change"):
                _check_timeline_theme(page, scheme)
            if path == "attention":
                # Every token of the strips is drawn on an opaque background with dark or white text. The strips
                # are HTML drawn after the script ends: on a busy machine they can lag the idle state.
                page.wait_for_selector(".attn-view .toks > span", timeout=RUN_S * 1000)
                tokens = page.evaluate(
                    "() => [...document.querySelectorAll('.attn-view .toks > span')].map(t => [t.className,"
                    " getComputedStyle(t).backgroundColor, getComputedStyle(t).color])"
                )
                colors = [(bg, fg) for _, bg, fg in tokens]
                assert colors and all(bg.startswith("rgb(") and fg in ("rgb(17, 17, 17)", "rgb(255, 255, 255)")
                                      for bg, fg in colors), colors[:5]  # fmt: skip
                # Shaded where a head looks (the trained heads look somewhere), white where it gives next to nothing.
                white = "rgb(255, 255, 255)"
                shaded = [bg for cls, bg, _ in tokens if re.search(r"\bw([1-9]\d*)\b", cls)]
                assert shaded and white not in shaded, (scheme, shaded[:5])
                assert all(bg == white for cls, bg, _ in tokens if not re.search(r"\bw\d", cls)), scheme
    finally:
        context.close()


def _luminance(css_rgb: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", css_rgb)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _check_timeline_theme(page: Any, scheme: str) -> None:
    """The timeline is drawn, inside the page's width, with text in the theme's own colour (light on dark)."""
    page.wait_for_selector(TIMELINE, timeout=RUN_S * 1000)
    box = page.locator(TIMELINE).bounding_box()
    assert box and box["x"] + box["width"] <= page.viewport_size["width"] + 1, box
    readout = page.locator(f"{TIMELINE} .readout").evaluate("e => getComputedStyle(e).color")
    background = page.evaluate("getComputedStyle(document.querySelector(\"[data-testid='stApp']\")).backgroundColor")
    assert abs(_luminance(readout) - _luminance(background)) > 0.5, (scheme, readout, background)


# Text that CSS cuts with an ellipsis (a metric's value or label, a button's label): what a projector's audience
# cannot read.
_CUT_TEXT_JS = """() => [...document.querySelectorAll('[data-testid=stMain] *')]
  .filter(e => getComputedStyle(e).textOverflow === 'ellipsis' && e.scrollWidth > e.clientWidth + 1)
  .map(e => e.textContent.trim().slice(0, 60))"""
# Charts that drew nothing (no canvas or SVG of a real size): a chart Vega-Lite cannot lay out stays blank.
_BLANK_CHART_JS = """() => [...document.querySelectorAll('[data-testid=stMain] [data-testid=stVegaLiteChart]')]
  .filter(c => {
    const drawn = c.querySelector('canvas, svg');
    const r = drawn ? drawn.getBoundingClientRect() : {width: 0, height: 0};
    return r.width <= 50 || r.height <= 50;
  })
  .map(c => c.closest('[data-testid=stElementContainer]')?.previousElementSibling?.textContent?.slice(0, 60) || '?')"""
# Metrics whose value is drawn no larger than their label (presenter mode's paragraph rule once shrank them).
_SMALL_METRIC_JS = """() => [...document.querySelectorAll('[data-testid=stMain] [data-testid=stMetric]')].filter(m => {
  const text = (sel) => [...m.querySelectorAll(sel + ' *')].filter(e => !e.children.length && e.textContent.trim())
    .map(e => parseFloat(getComputedStyle(e).fontSize));
  return Math.min(...text('[data-testid=stMetricValue]')) <= Math.max(...text('[data-testid=stMetricLabel]'));
}).map(m => m.textContent.trim().slice(0, 60))"""
# Charts (canvas or SVG) whose right edge passes the page's content column, and charts squashed under 300 px.
_CHART_FIT_JS = """() => {
  const column = document.querySelector('[data-testid=stMainBlockContainer]').getBoundingClientRect();
  return [...document.querySelectorAll('[data-testid=stMain] .vega-embed canvas, [data-testid=stMain] .vega-embed svg')]
    .map(c => c.getBoundingClientRect())
    .filter(r => r.width > 0 && (r.right > column.right + 1 || r.width < 300))
    .map(r => Math.round(r.width) + ' px wide, ends at ' + Math.round(r.right) + ' of ' + Math.round(column.right));
}"""


@pytest.mark.parametrize("present", [False, True], ids=["plain", "presenter-mode"])
def test_every_page_fits_a_projector(browser: Browser, present: bool) -> None:
    """At 1024 x 768 (a classroom projector) with the sidebar open, in presenter mode's large type too, no page
    cuts text or charts: panels stack,
    metric rows wrap, the composition facets fit. Streamlit's columns only stack below 640 px, and here they had
    squashed each chart to ~270 px, cut metric values ("-0.264…") and run a facet chart past the page."""
    context = browser.page.context.browser.new_context(viewport={"width": 1024, "height": 768})
    try:
        page = context.new_page()
        page.set_default_timeout(RUN_S * 1000)
        for spec in PAGES:
            path = "" if spec.name == "home" else spec.name
            link = f"{browser.url}/{path}?run=attn2&step={shipped_last_step()}" + ("&present=1" if present else "")
            page.goto(link, wait_until="domcontentloaded")
            page.wait_for_selector(f"{MAIN} h1", timeout=FIRST_RUN_S * 1000)
            page.wait_for_selector(APP_IDLE, timeout=FIRST_RUN_S * 1000)
            page.wait_for_timeout(1500)  # charts lay out after the script is done
            assert page.locator(f"{EXCEPTION}, {ERROR_ALERT}").count() == 0, spec.path
            assert page.evaluate(_OVERFLOW_JS) == [], spec.path
            assert page.evaluate(_CUT_TEXT_JS) == [], spec.path
            assert page.evaluate(_CHART_FIT_JS) == [], spec.path
            assert page.evaluate(_SMALL_METRIC_JS) == [], spec.path
            assert page.evaluate(_BLANK_CHART_JS) == [], spec.path
            if spec.name in ("attention", "phase_change"):  # the timeline: drawn, in the column, large when presenting
                page.wait_for_selector(TIMELINE, timeout=RUN_S * 1000)
                column = page.locator("[data-testid=stMainBlockContainer]").bounding_box()
                box = page.locator(TIMELINE).bounding_box()
                assert box and box["x"] + box["width"] <= column["x"] + column["width"] + 1, (spec.path, box)
                assert page.locator(f"{TIMELINE}.present").count() == int(present), spec.path
    finally:
        context.close()


# --------------------------------------------------------------------------------------------------------------
# The training timeline (ui/timeline.js): scrubbing and playing run in the browser


_COUNT_RUNS_JS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  window.__scriptRuns = 0;
  new MutationObserver(() => {
    if (app.getAttribute('data-test-script-state') === 'running') window.__scriptRuns += 1;
  }).observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""


def _scrub_to(page: Any, index: int) -> None:
    """What a drag of the scrubber does: its value changes and it fires input events (then change on release)."""
    page.locator(f"{TIMELINE} input.scrub").evaluate(
        "(el, i) => { el.value = String(i); el.dispatchEvent(new Event('input', {bubbles: true})); }", index
    )


def _selected_rules(page: Any) -> list[str]:
    """Where the charts draw the selected step's red rule (Vega's SVG lines in SELECT_COLOR)."""
    from ui.theme import SELECT_COLOR

    return page.locator(f"{CHART} line[stroke='{SELECT_COLOR}']").evaluate_all(
        "ls => ls.map(l => l.getAttribute('transform'))"
    )


def test_scrubbing_draws_each_snapshots_own_attention(browser: Browser) -> None:
    """Scrub the Attention page's timeline to three snapshots: the drawn weight of the induction head on an
    induction target equals the server's own forward pass at that step, to the quantisation's precision."""
    from icl_core.analysis.text import analyze_tokens, prepare_text
    from icl_core.analysis.timeline import QUANT_ERROR
    from icl_core.storage.snapshots import list_snapshots, load_model

    text = "Zebra quilts jump over lazy dogs. Zebra quilts jump over lazy dogs."
    dest = text.index("lazy", 40) + 1  # the second "lazy": token dest+1 is 'a' (BOS first), after an earlier "l"
    page = browser.page
    page.goto(f"{browser.url}/attention?run=attn2&text={text.replace(' ', '%20')}&dest={dest}")
    page.wait_for_selector(TIMELINE, timeout=FIRST_RUN_S * 1000)
    browser.wait_idle()
    snaps = list_snapshots(ROOT / "checkpoints" / "attn2")
    head = shipped_induction_head()
    layer, h = (int(x) for x in re.findall(r"\d+", head))
    page.evaluate(_COUNT_RUNS_JS)
    for index in (0, len(snaps) // 3, len(snaps) - 2):
        _scrub_to(page, index)
        box = page.locator(TIMELINE)
        assert box.get_attribute("data-index") == str(index)
        snap = snaps[index]
        assert box.get_attribute("data-step") == str(snap.step)
        an = analyze_tokens(load_model(snap), prepare_text(text, snap.model_config.n_ctx).tokens)
        for key in (int(k) for k in np.flatnonzero(an.targets[dest])[:1].tolist() + [dest - 1, 0]):
            cell = page.locator(f"{TIMELINE} .row[data-head='{head}'] span[data-key='{key}']")
            drawn = float(cell.get_attribute("data-w"))
            expected = float(an.patterns[layer, h, dest, key])
            assert abs(drawn - expected) <= QUANT_ERROR + 5e-4, (snap.step, key, drawn, expected)
    page.wait_for_timeout(300)
    assert page.evaluate("window.__scriptRuns") == 0  # every frame above came from the browser


def test_play_animates_the_phase_change_with_no_script_run_and_pause_sets_the_shared_step(browser: Browser) -> None:
    page = browser.page
    page.goto(f"{browser.url}/phase_change?run=attn2&step={shipped_last_step()}")
    page.wait_for_selector(TIMELINE, timeout=FIRST_RUN_S * 1000)
    browser.wait_idle()
    page.wait_for_timeout(1500)  # the charts bind to the timeline once drawn
    _scrub_to(page, 5)
    before = _selected_rules(page)
    assert before, "no chart draws the selected step's rule"
    page.evaluate(_COUNT_RUNS_JS)
    page.evaluate("window.__iclTimeline.playTimes = []")
    page.locator(f"{TIMELINE} select").select_option("15")
    page.locator(f"{TIMELINE} button.play").click()
    page.wait_for_timeout(2000)
    during = _selected_rules(page)
    page.locator(f"{TIMELINE} button.play").click()  # pause
    times = page.evaluate("window.__iclTimeline.playTimes")
    assert page.evaluate("window.__scriptRuns") == 0, "the server ran the page during play"
    assert len(times) >= 15, f"{len(times)} frames in 2 s at 15 a second"
    assert during != before, "the charts' rule did not follow the timeline"
    step = page.locator(TIMELINE).get_attribute("data-step")
    # Pause sends the snapshot on screen once: the sidebar and the link follow it.
    # (In the page: playwright's page.url is only refreshed while it handles a call, not while Python sleeps.)
    page.wait_for_function("s => new URLSearchParams(location.search).get('step') === s", arg=step)
    browser.wait_idle()
    sidebar = page.locator("[data-testid='stSidebar'] [data-testid='stSliderThumbValue']").first.inner_text()
    assert sidebar.replace(",", "") == step
    assert page.evaluate("window.__scriptRuns") >= 1
    assert page.locator(TIMELINE).get_attribute("data-step") == step  # the rerun kept the frame on screen
    browser.assert_healthy("phase change after play")


def test_every_page_works_on_an_imported_transformer_lens_run(
    browser: Browser, server_data_dir: Path, fake_hub: Any, tl_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TransformerLens-format run (LayerNorm, biases, BPE tokenizer), downloaded from the fake Hub by our code
    into the server's data folder, is shown by every page: its own tokens in the text views, no error.
    Runs last in this file: the run is removed afterwards, so it is in no screenshot of the shipped runs."""
    import shutil

    from tl_fixtures import REPO

    from icl_core.analysis.evaluation import evaluate_run
    from icl_core.storage import tl_hub
    from icl_core.storage.runs import discover_runs

    monkeypatch.setenv("ICL_DATA_DIR", str(server_data_dir))
    repo = tl_hub.list_repo(REPO)
    run_dir = tl_hub.import_checkpoints(repo, list(repo.checkpoints[1:]))
    try:
        evaluate_run(run_dir, eval_examples=8)
        name = next(r.name for r in discover_runs() if r.path == run_dir)
        page = browser.page
        for spec in PAGES:
            path = "" if spec.name == "home" else spec.name
            page.goto(f"{browser.url}/{path}?run={name}", wait_until="domcontentloaded")
            page.wait_for_selector(f"{MAIN} h1", timeout=FIRST_RUN_S * 1000)
            browser.wait_idle(FIRST_RUN_S)
            page.wait_for_timeout(500)
            browser.wait_idle()
            browser.assert_healthy(f"{spec.path} on the imported run {name}")
            assert "works on byte-level runs" not in browser.main_text(), spec.path
            if spec.name in ("attention", "phase_change", "ablation", "circuits"):
                check_charts(browser)
            if spec.name == "attention":
                assert "read with the run's tokenizer" in browser.main_text()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
