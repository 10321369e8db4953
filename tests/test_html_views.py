"""The HTML views that replace the interactive pages' grids and Vega heatmaps: tables and heatmap images."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
from PIL import Image

from ui import heatmaps, strips, theme
from ui.tables import Bar, html_table
from ui.theme import TARGET_COLOR


def test_html_table_escapes_text_formats_numbers_and_draws_bars() -> None:
    df = pd.DataFrame({"token": ["<b>x</b>", "y"], "p": [0.25, np.float32(0.75)], "seen": [np.bool_(True), False]})
    out = html_table(df, bars={"p": Bar(".3f")}, marked=pd.Series([False, True]))
    assert "<b>x</b>" not in out and "&lt;b&gt;x&lt;/b&gt;" in out  # user text cannot inject markup
    assert "0.250" in out and "0.750" in out
    assert re.search(r"rgba\([^)]*\) 25\.0%", out) and re.search(r"rgba\([^)]*\) 75\.0%", out)  # bar = value
    assert out.count("✓") == 1 and out.count('class="mark"') == 1
    assert out.count("<th>") == 3 and out.count("<tr>") + out.count('<tr class="mark">') == 3


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_heatmap_image_shows_each_weight_blank_cells_and_target_rings() -> None:
    weights = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.004, 0.0, 0.996]])
    targets = np.zeros((3, 3), bool)
    targets[2, 1] = True
    img = _decode(heatmaps.palette_png(heatmaps.head_image(weights, targets)))
    px = heatmaps.PX
    assert img.shape == (3 * px, 3 * px, 4)

    def core(q: int, k: int) -> np.ndarray:
        return img[q * px + px // 2, k * px + px // 2]

    assert core(0, 1)[3] == 0  # above the diagonal: blank
    assert tuple(core(2, 0)) == (*(int(heatmaps.FAINT[i : i + 2], 16) for i in (0, 2, 4)), 255)  # ~0: faint grey
    assert tuple(core(0, 0)[:3]) == (0x0A, 0x4A, 0x90)  # weight 1: the darkest blue of Vega's "blues"
    half = core(1, 0)[:3].astype(int)
    assert core(1, 0)[3] == 255 and (half > core(0, 0)[:3]).all() and (half < (0xCF, 0xE1, 0xF2)).all()
    orange = tuple(int(TARGET_COLOR[i : i + 2], 16) for i in (1, 3, 5))
    assert tuple(img[2 * px, 1 * px][:3]) == orange and img[2 * px, 1 * px][3] == 255  # the ring's corner


def test_heatmaps_html_labels_every_row_and_column_of_every_head() -> None:
    class Analysis:  # what heatmaps_html reads of a TextAnalysis
        labels = ["<s>", "a", "<", "b", "a"]
        patterns = np.tril(np.full((1, 2, 5, 5), 0.3))
        targets = np.zeros((5, 5), bool)

    out = heatmaps.heatmaps_html(Analysis(), [(0, 0), (0, 1)], 1, 5)
    assert out.count("<figure") == 2 and out.count("<img") == 2
    axes = re.findall(r'<div class="hm-([xy])">([^<]*)</div>', out)
    assert [a for a, _ in axes] == ["y", "x", "y", "x"]  # rows and columns of both heads ...
    assert all(text.split("\n") == ["a", "&lt;", "b", "a"] for _, text in axes)  # ... each the window's tokens
    for src in re.findall(r'src="data:image/png;base64,([^"]+)"', out):
        assert _decode(base64.b64decode(src)).shape[:2] == (4 * heatmaps.PX, 4 * heatmaps.PX)


def test_token_strip_shades_every_token_and_gives_a_tooltip_only_where_a_head_looks() -> None:
    class Analysis:  # what token_attention_html reads of a TextAnalysis
        labels = ["<s>", "a", "<", "b", "a"]
        patterns = np.zeros((1, 2, 5, 5))
        targets = np.zeros((5, 5), bool)

    Analysis.patterns[0, 0, 4] = [0.0, 0.004, 0.0, 0.9, 0.096]  # head L0H0 from the last 'a': mostly on 'b'
    Analysis.patterns[0, 1, 4] = [1.0, 0.0, 0.0, 0.0, 0.0]
    Analysis.targets[4, 3] = True  # 'b' follows the earlier 'a'
    out = strips.token_attention_html(Analysis(), 4, [(0, 0), (0, 1)])
    rows = re.findall(r'<span class="head">(L0H[01])</span><span class="toks">(.*?)</span></div>', out)
    assert [name for name, _ in rows] == ["L0H0", "L0H1"]
    for name, row in rows:
        tokens = re.findall(r"<span([^>]*)>([^<]*)</span>", row)
        assert [text for _, text in tokens] == ["&lt;s&gt;", "a", "&lt;", "b", "a"]  # every token, escaped
        titles = [re.search(r'title="([^"]*)"', attrs) for attrs, _ in tokens]
        weights = Analysis.patterns[0, int(name[-1]), 4]
        # A tooltip with the exact weight on every token the head gives at least MIN_ATTENTION, none elsewhere.
        assert [t is not None for t in titles] == [bool(w >= theme.MIN_ATTENTION) for w in weights], name
        assert all(f"{w:.3f}" in t.group(1) for t, w in zip(titles, weights, strict=True) if t), name
        levels = [int(m.group(1)) if (m := re.search(r"\bw(\d+)\b", attrs)) else 0 for attrs, _ in tokens]
        assert max(levels) == levels[int(np.argmax(weights))] >= 18  # darker = more
        pairs = list(zip(levels, weights, strict=True))
        assert all((lv > lu) == (w > u) for lv, w in pairs for lu, u in pairs if lv != lu)
        assert "t" in re.search(r'class="([^"]*)"', tokens[3][0]).group(1).split()  # the induction target
        assert "d" in re.search(r'class="([^"]*)"', tokens[4][0]).group(1).split()  # the destination
        assert "class=" not in tokens[2][0]  # an unshaded token is a bare span
