"""Work that reports progress from other threads, drawn from the script's own thread: Streamlit lets a page draw
only from the thread that runs it, while huggingface_hub reports a download's progress from its own threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
P = TypeVar("P")

POLL_S = 0.1  # how often the page's thread looks for news: a bar that moves ten times a second looks smooth


def run_relaying(work: Callable[[Callable[[P], None]], T], show: Callable[[P], None]) -> T:
    """work(report) in a thread of its own; the latest report is handed to show() from this thread as it comes.
    Returns work's result or raises its exception here."""
    latest: list[P] = []
    lock = threading.Lock()
    result: dict[str, object] = {}

    def report(value: P) -> None:
        with lock:
            latest[:] = [value]

    def run() -> None:
        try:
            result["value"] = work(report)
        except BaseException as exc:  # handed to the page's thread below
            result["error"] = exc

    worker = threading.Thread(target=run, name="relayed-work", daemon=True)
    worker.start()
    while True:
        worker.join(POLL_S)
        alive = worker.is_alive()  # before draining: what it reported before it ended is drawn
        with lock:
            news, latest[:] = list(latest), []
        for value in news:
            show(value)
        if not alive:
            break
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]
