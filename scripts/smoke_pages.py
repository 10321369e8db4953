"""Open every page of a running explorer in headless Chromium and check it draws with no error.

    .venv/bin/python scripts/smoke_pages.py http://127.0.0.1:8501

For a server this repository did not start (the Space's image, a deployment): the pages come from ui/nav.py,
the browser is Debian's chromium, as in tests/test_browser.py. Exits non-zero on the first page that shows a
traceback, an st.error message or no title; prints each page's time to idle.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ui.nav import PAGES  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
EXCEPTION, ERROR = "[data-testid='stException']", "[data-testid='stAlertContentError']"


def main(url: str) -> int:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        for path, title, _ in PAGES:
            slug = "" if path == "pages/home.py" else Path(path).stem
            t = time.perf_counter()
            page.goto(f"{url.rstrip('/')}/{slug}", wait_until="domcontentloaded")
            page.wait_for_selector("[data-testid='stMain'] h1", timeout=120_000)
            page.wait_for_selector(IDLE, timeout=120_000)
            page.wait_for_timeout(500)
            page.wait_for_selector(IDLE, timeout=60_000)
            took = time.perf_counter() - t
            problems = page.locator(
                "[data-testid='stException'], [data-testid='stAlertContentError']"
            ).all_inner_texts()
            if problems:
                print(f"FAIL {title}: {problems[0][:500]}")
                return 1
            print(f"ok   {title} ({took:.1f} s)")
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8501"))
