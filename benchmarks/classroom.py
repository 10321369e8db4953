"""The classroom: N visitors open the app at once on one server, as a class does with a teacher's Space link.

Starts `streamlit run app.py` as the Space runs it (file watcher off, a shared server: ICL_SHARED_SERVER=1, and
one proxy in front: ICL_PROXY_HOPS=1), then N protocol clients (benchmarks/protocol_client.py: the websocket
protocol of a browser tab, without drawing), arriving evenly over --arrival-s. Each visitor, with its own
address in X-Forwarded-For as Spaces' proxy sends it:

  1. opens the tour, then the Phase change page of attn2;
  2. moves through training in the browser: only where Play pauses does the server hear of it (3 commits);
  3. opens the Attention page and types a text of its own (its forward passes at every snapshot are built);
  4. moves through that text's training timeline (3 commits), then moves the sidebar's step twice.

With --hostile, one more visitor does the same while reloading (a new session) before every step, and submits a
training job (the form's largest: 1M steps) after every reload. Server-side time per interaction is the time
from sending the message to the script being idle again (127.0.0.1: no network in it). Also sampled: the server's
RSS and CPU (its process only; training jobs are separate processes, counted apart). After the visitors leave,
--linger-s later, the RSS again (Streamlit drops a closed session after server.disconnectedSessionTTL, 120 s).

Run: .venv/bin/python benchmarks/classroom.py --visitors 30 [--hostile] [--linger-s 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import start_server  # noqa: E402
from protocol_client import ProtocolError, RunResult, Visitor  # noqa: E402

RUN = "attn2"
PHASE_TIMELINE, TEXT_TIMELINE = f"phase_timeline_{RUN}", "attn_timeline"
COMMITS = (1_000, 3_000, 20_000)  # where a student pauses Play: before, inside and after attn2's phase change
PREPARING = "Preparing the timeline"  # ui/timeline.py's caption while a text's forward passes are built
WORDS = "the a cat dog sat ran on under mat log red blue small big quickly slowly and then".split()
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Tally:
    times: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    def add(self, what: str, result: RunResult) -> None:
        self.times.setdefault(what, []).append(result.seconds)
        self.exceptions += result.exceptions


def visitor_text(index: int) -> str:
    """A text of the visitor's own (so no cache serves it), repeated once: something for induction to copy."""
    rng = random.Random(index)
    sentence = " ".join(rng.choice(WORDS) for _ in range(12)) + "."
    return f"{sentence} {sentence}"


async def classroom_visit(v: Visitor, index: int, tally: Tally, reload: bool = False) -> None:
    async def step(what: str, action: object) -> None:
        result = await action  # type: ignore[misc]
        tally.add(what, result)

    await step("first page (tour)", v.open(""))
    await step("Phase change page", v.open("phase_change", f"run={RUN}"))
    for target in COMMITS:
        await step("timeline commit", v.commit_timeline(PHASE_TIMELINE, target))
    await step("Attention page", v.open("attention", v.query))
    v.watch = (PREPARING,)
    typed = await v.set_widget("attn_text", string_value=visitor_text(index))
    v.watch = ()
    tally.add("new text: timeline ready", typed)
    # The text's views at the selected step are drawn before the slot that waits for the timeline says so.
    first = typed.first_seen.get(PREPARING)
    tally.times.setdefault("new text: first views", []).append(first if first is not None else typed.seconds)
    for target in COMMITS:
        await step("timeline commit", v.commit_timeline(TEXT_TIMELINE, target))
    for option in (5, -5):
        await step("sidebar step", v.choose("step", option))


async def normal_visitor(port: int, index: int, delay: float, tally: Tally, timeout_s: float) -> None:
    await asyncio.sleep(delay)
    v = Visitor(port, {"X-Forwarded-For": f"198.51.{index // 250}.{index % 250 + 1}"}, timeout_s)
    try:
        await classroom_visit(v, index, tally)
    except (ProtocolError, OSError) as exc:
        tally.errors.append(f"visitor {index}: {exc}")
    finally:
        await v.close()


async def hostile_visitor(port: int, stop: asyncio.Event, tally: Tally, timeout_s: float) -> None:
    """Reloads (a new session) before every step and asks for a big training job after every reload."""
    headers = {"X-Forwarded-For": "203.0.113.66"}
    round_ = 0
    while not stop.is_set() and round_ < 200:
        round_ += 1
        v = Visitor(port, headers, timeout_s)
        try:
            tally.add("hostile: open the Train page", await v.open("train"))
            await v.set_widget("train_run_name", string_value=f"hostile-{os.getpid()}-{round_}")
            await v.set_widget("train_total_steps", double_value=1_000_000)
            result = await v.click("train_submit")
            tally.add("hostile: submit a job", result)
            tally.alerts += result.alerts + result.toasts
            await v.close()
            v = Visitor(port, headers, timeout_s)
            tally.add("hostile: Phase change page", await v.open("phase_change", f"run={RUN}"))
            tally.add("hostile: timeline commit", await v.commit_timeline(PHASE_TIMELINE, COMMITS[round_ % 3]))
        except (ProtocolError, OSError) as exc:
            tally.errors.append(f"hostile round {round_}: {exc}")
        finally:
            await v.close()


class Sampler(threading.Thread):
    """The server process's RSS (MB) and CPU (cores busy) every `every` s, from /proc."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.rss: list[float] = []
        self.cpu: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        last = (time.monotonic(), cpu_seconds(self.pid))
        while not self.halt.wait(self.every):
            now = (time.monotonic(), cpu_seconds(self.pid))
            self.cpu.append((now[1] - last[1]) / (now[0] - last[0]))
            self.rss.append(rss_mb(self.pid))
            last = now


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def stop_jobs(data_dir: str) -> None:
    """Training jobs outlive the server (by design): end the ones this benchmark's visitors started."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if data_dir.encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def scenario(port: int, visitors: int, arrival_s: float, hostile: bool, timeout_s: float) -> Tally:
    tally, hostile_tally = Tally(), Tally()
    stop = asyncio.Event()
    spread = arrival_s / max(1, visitors - 1) if visitors > 1 else 0.0
    rogue = asyncio.create_task(hostile_visitor(port, stop, hostile_tally, timeout_s)) if hostile else None
    await asyncio.gather(*(normal_visitor(port, i, i * spread, tally, timeout_s) for i in range(visitors)))
    stop.set()
    if rogue is not None:
        await rogue
        tally.errors += hostile_tally.errors
        tally.exceptions += hostile_tally.exceptions
        tally.alerts = hostile_tally.alerts
        tally.times.update({k: v for k, v in hostile_tally.times.items()})
    return tally


def report(tally: Tally, sampler: Sampler, rss_start: float, rss_after: float | None, args: argparse.Namespace) -> None:
    print(
        f"\n{args.visitors} visitors arriving over {args.arrival_s:.0f} s{' + a hostile one' if args.hostile else ''}"
    )
    print("interaction: n, p50 / p95 / max (s, server side)")
    for what, values in tally.times.items():
        print(f"  {what}: {len(values)}, {statistics.median(values):.2f} / {pct(values, 0.95):.2f} / {max(values):.2f}")
    others = [t for what, v in tally.times.items() if what != "first page (tour)" and not what.startswith("hostile")
              for t in v]  # fmt: skip
    first = tally.times.get("first page (tour)", [0.0])
    print(f"first page p50/p95: {statistics.median(first):.2f} / {pct(first, 0.95):.2f} s; every other interaction "
          f"p50/p95: {statistics.median(others or [0]):.2f} / {pct(others or [0], 0.95):.2f} s")  # fmt: skip
    print(f"errors: {len(tally.errors)}, exceptions: {len(tally.exceptions)}")
    for line in (tally.errors + tally.exceptions)[:10]:
        print("  ", line[:300])
    if tally.alerts:
        print("hostile visitor's answers (distinct):")
        for text in sorted(set(tally.alerts))[:8]:
            print(f"   {tally.alerts.count(text)}x {text[:200]}")
    busy = statistics.mean(sampler.cpu) if sampler.cpu else 0.0
    print(f"server RSS: {rss_start:.0f} MB at start, {max(sampler.rss, default=0):.0f} MB at peak"
          + (f", {rss_after:.0f} MB {args.linger_s:.0f} s after the visitors left" if rss_after else "")
          + f"; server CPU while visitors were on: {busy:.2f} cores on average, "
          f"{max(sampler.cpu, default=0):.2f} at most")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--arrival-s", type=float, default=10.0)
    parser.add_argument("--hostile", action="store_true")
    parser.add_argument("--linger-s", type=float, default=0.0, help="measure the RSS this long after they leave")
    parser.add_argument("--timeout-s", type=float, default=180.0, help="the longest wait for one interaction")
    args = parser.parse_args(argv)
    if not 1 <= args.visitors <= 200:
        parser.error("--visitors: 1 to 200")
    with tempfile.TemporaryDirectory(prefix="icl-classroom-") as data_dir:
        os.environ["ICL_PROXY_HOPS"] = "1"  # the server trusts one proxy's X-Forwarded-For, as on a Space
        proc, url = start_server(data_dir, shared=True)
        try:
            port = int(url.rsplit(":", 1)[1])
            time.sleep(2.0)
            rss_start = rss_mb(proc.pid)
            sampler = Sampler(proc.pid)
            sampler.start()
            tally = asyncio.run(scenario(port, args.visitors, args.arrival_s, args.hostile, args.timeout_s))
            sampler.halt.set()
            rss_after = None
            if args.linger_s > 0:  # the RSS every 30 s after they left, the last one reported
                left = time.monotonic()
                while (waited := time.monotonic() - left) < args.linger_s:
                    time.sleep(min(30.0, args.linger_s - waited))
                    rss_after = rss_mb(proc.pid)
                    print(f"  {time.monotonic() - left:.0f} s after the visitors left: RSS {rss_after:.0f} MB")
            report(tally, sampler, rss_start, rss_after, args)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            stop_jobs(data_dir)
    return 1 if tally.errors or tally.exceptions else 0


if __name__ == "__main__":
    raise SystemExit(main())
