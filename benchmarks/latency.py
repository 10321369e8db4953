"""Browser latency of the explorer's interactions on the shipped runs, as a visitor feels it.

One `streamlit run app.py` server and one headless Debian-chromium session (as tests/test_browser.py). Timed
from the action to the app's script state returning to idle (benchmarks/load.py's timed_action), warm caches
after one round; cold first page after the server is ready. Prints p50/p95 per interaction against the targets
(quiet 2-core machine, warm): p95 < 300 ms for slider, toggle and text; < 1 s for a run change; cold first page
< 3 s. Then the training timeline (benchmarks/timeline_frames.py): scrub frames and Play on the Phase change and
Attention pages, a new text's first views, and the server time of a text's package on the 3-layer run.

Run: .venv/bin/python benchmarks/latency.py --rounds 20
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import cpu_reference_ms  # noqa: E402
from load import HEAD_PICK, MAIN, navigate, open_first_page, percentile, start_server, type_into  # noqa: E402
from load import timed_action_split as timed_action  # noqa: E402
from timeline_frames import BUILD_RUN, FIRST_VIEWS_JS, build_seconds, play_rate, scrub_ms, summary  # noqa: E402

TARGETS_MS = {
    "step slider (sidebar)": 300,
    "head toggle (Ablation)": 300,
    "new text (Attention)": 300,
    "destination slider (Attention)": 300,
    "run change (sidebar)": 1000,
    "open Phase change (sidebar link)": 1000,
    "step slider (Phase change)": 300,
}


@dataclass
class Timings:
    """Seconds per interaction, warm rounds only: until the app is idle, until the server's script run ended (the
    rest is the browser drawing), until the last change that draws something (no aria-* attribute)."""

    idle: dict[str, list[float]] = field(default_factory=dict)
    script: dict[str, list[float]] = field(default_factory=dict)
    visible: dict[str, list[float]] = field(default_factory=dict)
    first_views: list[float] = field(default_factory=list)  # a new text's own strip on screen (before its timeline)
    scrub: dict[str, list[float]] = field(default_factory=dict)  # page -> input-to-paint ms of timeline frames
    play: dict[str, tuple[float, int]] = field(default_factory=dict)  # page -> (snapshots a second, script runs)

    def record(self, what: str, seconds: tuple[float, float | None, float | None], warm: bool) -> None:
        if not warm:
            return
        for kept, value in ((self.idle, seconds[0]), (self.script, seconds[1]), (self.visible, seconds[2])):
            if value is not None:
                kept.setdefault(what, []).append(value)


def one_round(page, round_: int, timings: Timings) -> None:
    """Every timed interaction once, from the Attention page back to it."""
    warm = round_ > 0  # the first round fills the caches
    sidebar_step = page.locator("[data-testid='stSidebar'] [data-testid='stSlider'] input").first
    destination = page.locator(f"{MAIN} [data-testid='stSlider'] input").first
    box = page.locator("textarea").first
    # A new length every round, as typing gives: 49-88 tokens (the heatmaps' window slider comes and goes, the
    # token grid changes its number of rows).
    text = f"round {round_}: " + "the cat sat. " * (3 + round_ % 4)
    page.evaluate(f"(n) => {{ window.__fv = null; ({FIRST_VIEWS_JS})(n).then(ms => window.__fv = ms); }}",
                  f"round{round_}:the")  # fmt: skip
    timings.record("new text (Attention)", timed_action(page, lambda: type_into(box, text)), warm)
    first = page.evaluate("window.__fv")
    if warm and first is not None:
        timings.first_views.append(first / 1000)
    key = "ArrowRight" if round_ % 2 else "ArrowLeft"  # both sliders start at their last value

    def heading_follows() -> bool:
        value = destination.input_value().split()[0]
        return f"from token {value} " in page.locator(f"{MAIN} h3").first.inner_text()

    track = page.locator(f"{MAIN} [data-testid='stSlider']").first.bounding_box()
    x = track["x"] + track["width"] * (0.3 if round_ % 2 else 0.7)  # a click moves it somewhere new
    y = track["y"] + track["height"] * 0.75
    moved = timed_action(page, lambda: page.mouse.click(x, y), expect=heading_follows)
    timings.record("destination slider (Attention)", moved, warm)
    timings.record("step slider (sidebar)", timed_action(page, lambda: sidebar_step.press(key)), warm)
    navigate(page, "Ablation", f"{MAIN} {HEAD_PICK}")
    toggle = page.locator(f"{MAIN} {HEAD_PICK}").filter(has_text=re.compile(r"^L0H0"))
    for _ in range(2):
        timings.record("head toggle (Ablation)", timed_action(page, toggle.first.click), warm)
    other = "attn1" if round_ % 2 == 0 else "attn2"

    def change_run() -> None:
        page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first.click()
        page.locator("[role='option']").filter(has_text=re.compile(rf"^{other}\b")).first.click()

    timings.record("run change (sidebar)", timed_action(page, change_run), warm)
    # The page with the most charts (ICL score on three sets, every run on one axis, the PCA plane, the LLC).
    link = page.locator("[data-testid='stSidebarNav'] a").filter(has_text="Phase change").first
    timings.record("open Phase change (sidebar link)", timed_action(page, link.click), warm)
    timings.record("step slider (Phase change)", timed_action(page, lambda: sidebar_step.press(key)), warm)
    navigate(page, "Attention", "textarea")


def report(timings: Timings) -> None:
    print(
        f"{'interaction':<32} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'target p95':>11} {'script ended, p50':>18}"
        f" {'drawn, p50 / p95':>17}"
    )
    for what, target in TARGETS_MS.items():
        values = timings.idle.get(what, [])
        if values:
            p50, p95 = 1000 * statistics.median(values), 1000 * percentile(values, 0.95)
            ended = timings.script.get(what)
            script = f"{1000 * statistics.median(ended):.0f}" if ended else "-"
            seen = timings.visible.get(what)
            drawn = f"{1000 * statistics.median(seen):.0f} / {1000 * percentile(seen, 0.95):.0f}" if seen else "-"
            print(
                f"{what:<32} {len(values):>4} {p50:>8.0f} {p95:>8.0f} {'< ' + str(target):>11} {script:>18} {drawn:>17}"
            )
    print("p50 / p95: until the last change under the app; drawn: until the last that draws (no aria-* attribute)")
    if timings.first_views:
        print(f"new text, first views (its own strip painted): {summary([1000 * t for t in timings.first_views])}")
    for where, frames in timings.scrub.items():
        print(f"timeline scrub frame ({where}), input to paint: {summary(frames)} (target p95 <= 33 ms)")
    for where, (rate, runs) in timings.play.items():
        print(f"timeline play at 30/s ({where}): {rate:.1f} snapshots a second, {runs} script runs (target >= 15, 0)")


def timeline_round(page, timings: Timings) -> None:
    """Scrub and play the timeline on the Phase change page, then the Attention page (warm)."""
    for label, ready in (("Phase change", ".icl-tl"), ("Attention", ".icl-tl")):
        navigate(page, label, ready)
        page.wait_for_timeout(1500)  # the charts bind to the timeline once drawn
        timings.scrub[label] = scrub_ms(page)
        timings.play[label] = play_rate(page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    timings = Timings()
    reference = [cpu_reference_ms()]  # before and after: the machine's speed drifts
    builds = build_seconds()
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_server(data_dir)
        try:
            with sync_playwright() as pw:
                browser, page, cold = open_first_page(pw, url)
                for round_ in range(args.rounds + 1):
                    one_round(page, round_, timings)
                timeline_round(page, timings)
                browser.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
    reference.append(cpu_reference_ms())
    print(f"{args.rounds} warm rounds on {os.cpu_count()} CPUs; cold first page {1000 * cold:.0f} ms (target < 3000)")
    print(f"CPU reference (bench.cpu_reference_ms) before / after: {reference[0]:.0f} / {reference[1]:.0f} ms")
    print(f"timeline build, 128-token text on {BUILD_RUN} (server time): {summary(builds, 's')} (target <= 1.5 s)")
    report(timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
