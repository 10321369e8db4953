"""User-supplied text (link parameters, typed names, messages that echo them) made inert before it reaches Markdown.

Streamlit renders st.warning / st.error / st.markdown text as Markdown: a `?run=![x](http://host/x.png)` link
would make every visitor's browser fetch a remote image, and `[text](url)` would draw a live link inside the
app's own message, and a bare `http://…` or `www.…` would become a link. Escaping the characters that build
links, images, HTML, code, emphasis, Streamlit's `:color[…]` directives and LaTeX (and the `:` / `.` that
make a bare address a link) leaves plain text that shows exactly as typed.
"""

from __future__ import annotations

import re

MAX_ECHO = 80  # characters of a user's value repeated back in a message
_ACTIVE = re.compile(r"([\\`*\[\](){}<>!:$.#|~])")


def user_text(value: object, limit: int = MAX_ECHO) -> str:
    """`value` as inert Markdown text, cut to `limit` characters (an ellipsis says it was cut)."""
    text = str(value)
    cut = len(text) > limit
    text = text[:limit].replace("\n", " ").replace("\r", " ")
    return _ACTIVE.sub(r"\\\1", text) + ("…" if cut else "")
