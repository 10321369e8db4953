"""Load test: N browser sessions on one app server, each doing the Attention and Ablation interactions at once.

Starts `streamlit run app.py` (data folder in a temp dir, Hub offline) and N headless Debian-chromium sessions,
one thread each. Every session, for --seconds: types a new text on the Attention page, then on the Ablation
page switches the induction head of attn2 (at its last step) on and off, reading the second-copy loss each
time. Timed: from the action to the script state returning to idle. Prints p50/p95 per interaction and the
server's peak RSS (the whole process tree); with --check, also checks that every session read exactly the
numbers a solo session reads first (no leak between sessions), exiting 1 if not.

With --hostile, the server runs as a shared one (ICL_SHARED_SERVER=1, as on a Space) and the N sessions run twice:
alone, then beside a hostile visitor who asks for training jobs at the form's limits (the shipped attn2 preset
for a million steps, as many processes as allowed, several times over). It reports what was refused, queued
and run, and --check also requires every normal session's p95 beside the hostile one to stay within 2x its
figure alone.

Run: .venv/bin/python benchmarks/load.py --sessions 5 --seconds 60 [--hostile] [--check]
     (tests/test_load.py runs it with --sessions 2 --seconds 10 --check)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]  # fmt: skip
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
MAIN = "[data-testid='stMain']"
HEAD_PICK = "[data-testid='stButtonGroup'] button"  # the Ablation page's heads, one multi-select per layer
sys.path.insert(0, str(ROOT))
from icl_core.analysis.phase import best_induction_head  # noqa: E402
from icl_core.heads import head_name  # noqa: E402
from icl_core.storage.snapshots import list_snapshots  # noqa: E402

_LAST = list_snapshots(ROOT / "checkpoints" / "attn2")[-1]
HEAD = head_name(best_induction_head(_LAST))  # attn2's induction head
STEP = _LAST.step
METRIC = "Loss on the second copy"


@dataclass
class SessionLog:
    times: dict[str, list[float]] = field(default_factory=dict)  # interaction -> seconds
    readings: list[tuple[str, str]] = field(default_factory=list)  # (state, metric value)
    error: str | None = None

    def add(self, what: str, seconds: float) -> None:
        self.times.setdefault(what, []).append(seconds)


def start_server(data_dir: str, shared: bool = False) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(ROOT / ".venv" / "bin" / "streamlit"), "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--global.developmentMode", "false",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]  # fmt: skip
    env = {**os.environ, "ICL_DATA_DIR": data_dir, "HF_HUB_OFFLINE": "1", "ICL_SHARED_SERVER": "1" if shared else "0"}
    env.pop("ICL_EXTRA_RUNS_DIRS", None)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("the app server did not start within 90 s")


def tree_rss_mb(pid: int) -> float:
    """Resident memory of pid and its children (MB), from /proc."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        ppid = re.search(r"^PPid:\s+(\d+)", text, re.M)
        own = status.parent.name == str(pid)
        if own or (ppid and ppid.group(1) == str(pid)):
            rss = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
            total += int(rss.group(1)) if rss else 0
    return total / 1024


# Records, in the page's own clock, the last change the action caused on screen: the app's script state and
# every DOM change under the page's main area (a fragment rerun, e.g. the destination slider, changes the DOM
# without touching the script state). A poll from Python would miss a rerun shorter than its round trip.
_WATCH_JS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  if (window.__watch) window.__watch.disconnect();
  window.__lat = {start: performance.now(), last: null, idle: null, visible: null};
  window.__watch = new MutationObserver((records) => {
    const now = performance.now();
    window.__lat.last = now;
    // aria-* attributes draw nothing: Streamlit's slider sets its aria-valuetext in an effect after the paint.
    const drawn = (r) => !(r.type === 'attributes' && r.attributeName.startsWith('aria-'));
    if (records.some(drawn)) window.__lat.visible = now;
    // When the server's script run ended (the app's state attribute back to idle): the rest is drawing.
    if (records.some(r => r.target === app && r.attributeName === 'data-test-script-state')
        && app.getAttribute('data-test-script-state') === 'notRunning') window.__lat.idle = now;
  });
  window.__watch.observe(app, {attributes: true, childList: true, subtree: true, characterData: true});
}"""
QUIET_S = 0.8  # no change for this long, with the script idle: the action's effect is complete


def timed_action(page, action, expect: Callable[[], bool] | None = None) -> float:
    """Seconds from the action until the last change it caused on screen (`expect`: must hold by then)."""
    return timed_action_split(page, action, expect)[0]


def timed_action_split(
    page, action, expect: Callable[[], bool] | None = None
) -> tuple[float, float | None, float | None]:
    """(seconds until the last change under the app, seconds until the script run ended when the page saw it end,
    seconds until the last change that draws something: not an aria-* attribute)."""
    page.evaluate(_WATCH_JS)
    action()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.25)  # the times come from the page's own clock: polling often would only load its CPU
        lat, now = page.evaluate("() => [window.__lat, performance.now()]")
        idle = page.locator(IDLE).count() == 1 and (expect is None or expect())
        if lat["last"] is None:
            if now - lat["start"] > 3000:
                raise RuntimeError("the action changed nothing on screen")
            continue
        if idle and now - lat["last"] > 1000 * QUIET_S:
            script = (lat["idle"] - lat["start"]) / 1000 if lat["idle"] is not None else None
            visible = (lat["visible"] - lat["start"]) / 1000 if lat["visible"] is not None else None
            return (lat["last"] - lat["start"]) / 1000, script, visible
    raise RuntimeError("the screen did not settle within 30 s")


def type_into(box, text: str) -> None:
    box.fill(text)
    box.press("Control+Enter")  # a text area applies its value on Ctrl+Enter (or on leaving it)


def metric_value(page) -> str:
    box = page.locator(f"{MAIN} [data-testid='stMetric']").filter(has_text=METRIC).first
    return box.locator("[data-testid='stMetricValue']").inner_text().strip()


def open_first_page(pw, url: str):
    """A fresh browser on the Attention page of attn2's last step: (browser, page, seconds until idle)."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(120_000)
    t = time.perf_counter()
    page.goto(f"{url}/attention?run=attn2&step={STEP}", wait_until="domcontentloaded")
    page.wait_for_selector("textarea")
    page.wait_for_selector(IDLE)
    return browser, page, time.perf_counter() - t


def navigate(page, label: str, ready: str) -> None:
    """Click the sidebar link `label` and wait until `ready` is drawn and the app is idle."""
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text=label).first.click()
    page.wait_for_url(re.compile("/" + label.lower().split()[0]))
    page.wait_for_selector(ready)
    page.wait_for_selector(IDLE)


def run_session(url: str, seconds: float, log: SessionLog, index: int) -> None:
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as pw:
            browser, page, first = open_first_page(pw, url)
            log.add("first page", first)
            deadline = time.monotonic() + seconds
            round_ = 0
            while True:
                round_ += 1
                box = page.locator("textarea").first
                text = f"session {index} round {round_}: abc def abc def " * 3

                log.add("attention: new text", timed_action(page, lambda b=box, t=text: type_into(b, t)))
                navigate(page, "Ablation", f"{MAIN} [data-testid='stMetric']")
                toggle = page.locator(f"{MAIN} {HEAD_PICK}").filter(has_text=re.compile(f"^{HEAD}"))
                log.readings.append(("clean", metric_value(page)))
                for state in ("ablated", "clean"):
                    log.add("ablation: toggle", timed_action(page, lambda t=toggle: t.first.click()))
                    log.readings.append((state, metric_value(page)))
                if time.monotonic() > deadline:
                    break
                navigate(page, "Attention", "textarea")
            browser.close()
    except Exception as exc:  # noqa: BLE001 - reported by the main thread
        log.error = f"session {index}: {type(exc).__name__}: {exc}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, sessions: int, seconds: float) -> tuple[SessionLog, list[SessionLog]]:
    """A solo round (the reference numbers, warm caches), then `sessions` sessions at once for `seconds`."""
    solo = SessionLog()
    run_session(url, 0, solo, 0)
    logs = [SessionLog() for _ in range(sessions)]
    threads = [threading.Thread(target=run_session, args=(url, seconds, lg, i + 1)) for i, lg in enumerate(logs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return solo, logs


def report(title: str, solo: SessionLog, logs: list[SessionLog]) -> dict[str, float]:
    """Prints p50/p95 per interaction; returns the p95s."""
    print(title)
    print(f"{'interaction':<22} {'n':>4} {'p50 ms':>8} {'p95 ms':>8}   solo p50 ms")
    p95 = {}
    for what in sorted({w for lg in logs for w in lg.times}):
        values = [v for lg in logs for v in lg.times.get(what, [])]
        solo_values = solo.times.get(what, [])
        solo_txt = f"{1000 * statistics.median(solo_values):.0f}" if solo_values else "-"
        p95[what] = percentile(values, 0.95)
        print(f"{what:<22} {len(values):>4} {1000 * statistics.median(values):>8.0f} "
              f"{1000 * p95[what]:>8.0f}   {solo_txt}")  # fmt: skip
    return p95


def readings_failures(solo: SessionLog, logs: list[SessionLog]) -> list[str]:
    failures = []
    reference = dict(solo.readings)
    for i, lg in enumerate(logs, start=1):
        for state, value in lg.readings:
            if value != reference.get(state):
                failures.append(f"session {i} read {METRIC} = {value} ({state}); solo read {reference.get(state)}")
        if not lg.readings:
            failures.append(f"session {i} read nothing")
    return failures


def hostile_visitor(data_dir: str) -> list:
    """A visitor asking for everything the form allows, again and again: returns the jobs it got started."""
    from icl_core.errors import ICLError
    from icl_core.model.config import load_train_config
    from icl_core.server_policy import server_policy
    from icl_core.tasks import jobs

    os.environ["ICL_DATA_DIR"], os.environ["ICL_SHARED_SERVER"] = data_dir, "1"
    cfg = load_train_config(ROOT / "configs" / "attn2.json")
    started, refused = [], []
    for i in range(4):
        for nproc in (os.cpu_count() or 1, server_policy().max_job_processes or 1):
            big = dataclasses.replace(cfg, run_name=f"hostile-{i}-{nproc}", total_steps=1_000_000)
            try:
                started.append(jobs.submit_job(big, nproc=nproc, owner="hostile"))
            except ICLError as exc:
                refused.append(str(exc).split(":")[0][:80])
    print(f"hostile visitor: {len(started)} job(s) started, {len(refused)} refused ({'; '.join(sorted(set(refused)))})")
    return started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--check", action="store_true", help="compare every session's numbers with a solo session")
    parser.add_argument("--hostile", action="store_true", help="also measure beside a hostile visitor's jobs")
    args = parser.parse_args(argv)
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_server(data_dir, shared=args.hostile)
        peak = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], tree_rss_mb(proc.pid))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = []
        try:
            solo, logs = measure(url, args.sessions, args.seconds)
            if args.hostile:
                started = hostile_visitor(data_dir)
                time.sleep(5)  # the job is training (and evaluating) by now
                hostile_solo, hostile_logs = measure(url, args.sessions, args.seconds)
        finally:
            from icl_core.tasks import jobs

            for job in started:
                jobs.cancel_job(job.job_id, force=True)
            left = [j.job_id for j in jobs.list_jobs() if j.active] if started else []
            stop.set()
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        print(f"{args.sessions} concurrent sessions for {args.seconds:.0f} s on {os.cpu_count()} CPUs; "
              f"server peak RSS {peak[0]:.0f} MB")  # fmt: skip
        alone = report("alone:", solo, logs)
        failures += [lg.error for lg in [solo, *logs] if lg.error]
        if args.check:
            failures += readings_failures(solo, logs)
        if args.hostile:
            beside = report("beside the hostile visitor's job:", hostile_solo, hostile_logs)
            failures += [lg.error for lg in [hostile_solo, *hostile_logs] if lg.error]
            failures += [f"jobs still active after a forced cancel: {left}"] if left else []
            if args.check:
                failures += readings_failures(hostile_solo, hostile_logs)
                for what, p95 in beside.items():
                    if p95 > 2 * alone.get(what, float("inf")):
                        failures.append(f"{what}: p95 {1000 * p95:.0f} ms beside the hostile visitor, over 2x "
                                        f"its {1000 * alone[what]:.0f} ms alone")  # fmt: skip
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
