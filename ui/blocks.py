"""A heading, its captions and its HTML views as one st.html element.

Every Streamlit element costs the browser a few milliseconds of React work on every rerun; a heading, two
captions and a view drawn as one element cost one. Captions carry the class presenter mode hides (ui/state).
"""

from __future__ import annotations

import html

NOTE_CLASS = "icl-note"
CSS = (
    "<style>.icl-block h3{font-size:1.5rem;font-weight:600;margin:0 0 .4rem;padding:0;line-height:1.3}"
    f".icl-block .{NOTE_CLASS}{{font-size:.875rem;opacity:.65;margin:.2rem 0 .5rem;line-height:1.45}}</style>"
)


def note(text: str) -> str:
    """A caption (plain text, escaped)."""
    return f'<p class="{NOTE_CLASS}">{html.escape(text)}</p>'


def block(heading: str | None, *parts: str) -> str:
    """One element: an h3 `heading` (plain text, escaped), then `parts` (HTML: views, tables, note()s)."""
    head = f"<h3>{html.escape(heading)}</h3>" if heading else ""
    return f'{CSS}<div class="icl-block">{head}{"".join(parts)}</div>'
