"""One visitor, the browser benchmark's interactions, over the websocket protocol: how close the protocol client's
server-side times are to what a real browser sees of the server (benchmarks/latency.py's "script ended" column).

Each round, as latency.py's: a new text on the Attention page, the sidebar's step one snapshot on, on the Ablation
page the first head toggled on and off, then another run in the sidebar. The first round fills the caches and is
not counted. Server-side time: from the message to the script being idle again.

Run: .venv/bin/python benchmarks/protocol_solo.py --rounds 10   (then latency.py --rounds 10, the same machine)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import percentile, start_server  # noqa: E402
from protocol_client import Visitor  # noqa: E402

HEADS_KEY = "ablate_layer_0"  # pages/ablation.py's layer_key(0)


async def rounds(port: int, n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    v = Visitor(port)
    await v.open("attention", "run=attn2")
    for round_ in range(n + 1):

        def record(what: str, seconds: float, warm: bool = round_ > 0) -> None:
            if warm:
                times.setdefault(what, []).append(seconds)

        text = f"round {round_}: " + "the cat sat. " * (3 + round_ % 4)  # latency.py's texts
        record("new text (Attention)", (await v.set_widget("attn_text", string_value=text)).seconds)
        # latency.py presses the arrow keys on the sidebar slider: one snapshot back, then forward again.
        record("step slider (sidebar)", (await v.choose("step", -2 if round_ % 2 == 0 else -1)).seconds)
        await v.open("ablation", v.query)
        head = v.widgets[HEADS_KEY].options[0]
        for value in ([head], []):
            state = {"string_array_value": {"data": value}}
            record("head toggle (Ablation)", (await v.set_widget(HEADS_KEY, **state)).seconds)
        other = "attn1" if round_ % 2 == 0 else "attn2"
        label = next(o for o in v.widgets["run"].options if o.startswith(f"{other} "))
        record("run change (sidebar)", (await v.set_widget("run", string_value=label)).seconds)
        await v.open("attention", v.query)
    await v.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="icl-solo-") as data_dir:
        proc, url = start_server(data_dir)
        try:
            time.sleep(2.0)
            times = asyncio.run(rounds(int(url.rsplit(":", 1)[1]), max(1, min(args.rounds, 100))))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print(f"{'interaction':<32} {'n':>4} {'p50 ms':>8} {'p95 ms':>8}   (server side, protocol client)")
    for what, values in times.items():
        p50, p95 = 1000 * statistics.median(values), 1000 * percentile(values, 0.95)
        print(f"{what:<32} {len(values):>4} {p50:>8.0f} {p95:>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
