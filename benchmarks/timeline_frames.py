"""The training timeline's figures for benchmarks/latency.py: scrub frames, play rate, script runs during play,
the server time of a text's package, and a new text's first views (before its timeline).

Frames are timed in the page (ui/timeline.js): from the input event's timestamp to just after the frame that shows
it is painted (a message posted from requestAnimationFrame), for pointer drags and arrow keys on the scrubber.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TIMELINE = ".icl-tl[data-ready='1']"
BUILD_RUN = "attn3"  # the build bound: a new text of <= 128 tokens on the 3-layer shipped run
_COUNT_RUNS_JS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  if (window.__runWatch) window.__runWatch.disconnect();
  window.__scriptRuns = 0;
  window.__runWatch = new MutationObserver(() => {
    if (app.getAttribute('data-test-script-state') === 'running') window.__scriptRuns += 1;
  });
  window.__runWatch.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
# The first moment the server's own strip for a new text is on screen (its tokens spelled out, spaces as ␣).
FIRST_VIEWS_JS = """(needle) => new Promise((resolve) => {
  const start = performance.now();
  const seen = () => [...document.querySelectorAll('.attn-view')]
    .some(v => v.textContent.replace(/[\\s␣]/g, '').includes(needle));
  const watch = new MutationObserver(() => {
    if (seen()) { watch.disconnect(); requestAnimationFrame(() => resolve(performance.now() - start)); }
  });
  watch.observe(document.body, {childList: true, subtree: true, characterData: true});
  window.__firstViewsStart = start;
})"""


def scrub_ms(page, moves: int = 30) -> list[float]:
    """Input-to-paint times of `moves` pointer moves across the scrubber, then as many arrow keys."""
    page.wait_for_selector(TIMELINE)
    page.evaluate("window.__iclTimeline.scrubMs = []")
    box = page.locator(f"{TIMELINE} input.scrub").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.1, y)
    page.mouse.down()
    for i in range(moves):
        page.mouse.move(box["x"] + box["width"] * (0.1 + 0.8 * (i + 1) / moves), y)
        time.sleep(0.05)
    page.mouse.up()
    page.locator(f"{TIMELINE} input.scrub").focus()
    for i in range(moves):
        page.keyboard.press("ArrowLeft" if i % 2 else "ArrowRight")
        time.sleep(0.05)
    time.sleep(0.5)
    times = page.evaluate("window.__iclTimeline.scrubMs")
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")  # the commit's rerun
    return times


def play_rate(page, speed: int = 30, seconds: float = 4.0) -> tuple[float, int]:
    """(snapshots shown a second, server script runs) over `seconds` of Play at `speed` snapshots a second."""
    page.wait_for_selector(TIMELINE)
    page.evaluate(_COUNT_RUNS_JS)
    page.evaluate("window.__iclTimeline.playTimes = []")
    page.locator(f"{TIMELINE} select").select_option(str(speed))
    page.locator(f"{TIMELINE} button.play").click()
    time.sleep(seconds)
    runs = page.evaluate("window.__scriptRuns")
    times = page.evaluate("window.__iclTimeline.playTimes")
    page.locator(f"{TIMELINE} button.play").click()  # pause: one commit, one rerun
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
    rate = (len(times) - 1) / ((times[-1] - times[0]) / 1000) if len(times) > 1 else 0.0
    return rate, runs


def build_seconds(repeats: int = 3) -> list[float]:
    """Server time of a 128-token text's forward passes at every snapshot of the 3-layer run, as the app builds
    them (ui/timeline._forward_all, one torch thread), then its package (text_frames)."""
    from icl_core.analysis.timeline import HeatmapWindow, text_frames
    from icl_core.model.tokenizer import BYTES
    from icl_core.storage.snapshots import list_snapshots
    from ui.timeline import _Build, _forward_all

    snaps = list_snapshots(ROOT / "checkpoints" / BUILD_RUN)
    out = []
    for r in range(repeats):
        text = (f"def area_{r}(width, height):\n    return width * height\n" * 4)[:127]
        t = time.perf_counter()
        over = _forward_all(snaps, text, _Build(None, 0, len(snaps)))  # type: ignore[arg-type]
        text_frames(snaps, over, 126, HeatmapWindow((2, 2), 0, 128), BYTES, snaps[-1].step)
        out.append(time.perf_counter() - t)
    return out


def summary(values: list[float], unit: str = "ms") -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return f"n={len(values)} p50 {statistics.median(values):.1f} / p95 {p95:.1f} {unit}"
