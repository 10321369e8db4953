"""No page shows a placeholder it meant to fill: text like '{table.n_repeated}' on screen is a string that lost
its f prefix (the Head attribution page printed exactly that). Every page, on the shipped runs, is read for
'{identifier}' in all the text it renders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import open_page

from ui.nav import PAGES

# Not after a letter, backslash or brace: LaTeX arguments (\text{loss}, \frac{a}{b}) are not placeholders.
PLACEHOLDER = re.compile(r"(?<![\\A-Za-z}])\{[A-Za-z_][A-Za-z0-9_.]*(\[[^\]]*\])?(![rsa])?(:[^{}]*)?\}")
TEXT_ELEMENTS = (
    "title", "header", "subheader", "markdown", "caption", "text", "info", "success", "warning", "error",
    "metric", "button", "radio", "selectbox", "toggle", "checkbox", "text_area", "text_input", "select_slider",
)  # fmt: skip


def rendered_text(at) -> list[str]:
    texts: list[str] = []
    for kind in TEXT_ELEMENTS:
        for element in at.get(kind):
            proto = element.proto
            for field in ("body", "label", "help", "value", "placeholder"):
                value = getattr(proto, field, None)
                if isinstance(value, str) and value and "<style" not in value:
                    texts.append(value)
    return texts


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_check_finds_a_placeholder_that_lost_its_f_prefix() -> None:
    assert PLACEHOLDER.search("Second-copy loss: {table.n_repeated} sequences")
    assert PLACEHOLDER.search("{count:,} tokens") and PLACEHOLDER.search("{x!r}")
    assert not PLACEHOLDER.search("16 sequences; a set {1, 2}; $\\frac{a}{b}$ and {} and { x }")


@pytest.mark.parametrize("page", [p[0] for p in PAGES])
def test_no_page_shows_an_unfilled_placeholder(page: str) -> None:
    at = open_page(page, run="attn2")
    found = [(t[:80], m.group()) for t in rendered_text(at) for m in [PLACEHOLDER.search(t)] if m]
    assert found == [], found
