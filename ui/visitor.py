"""Who is asking: the key a shared server's limits (one training job per visitor) are counted by.

A reload is a new Streamlit session, so a session id cannot carry a limit. The visitor's network address, as the
proxy in front of a Space saw it, outlives reloads and cannot be chosen by the visitor
(server_policy.visitor_address says why). It is kept only as a salted hash: the jobs folder never holds an
address. Visitors behind one address (a classroom's NAT) share its limit; off a shared server no limit applies.
"""

from __future__ import annotations

import hashlib
import secrets

import streamlit as st

from icl_core.server_policy import server_policy, visitor_address

_SALT = secrets.token_bytes(16)  # per server process: a hash cannot be matched against a list of addresses
FORWARDED_FOR = "X-Forwarded-For"


def visitor_key() -> str:
    """ "visitor-<hash of the address>" when the address is known, else "session-<id>" (a local connection)."""
    headers = st.context.headers
    lines = [line for line in (headers.get_all(FORWARDED_FOR) if headers is not None else []) if isinstance(line, str)]
    peer = st.context.ip_address
    # Only strings: outside a browser's session (AppTest, bare mode) these may be stand-ins.
    address = visitor_address(lines, peer if isinstance(peer, str) else None, server_policy().proxy_hops)
    if address:
        return "visitor-" + hashlib.sha256(_SALT + address.encode()).hexdigest()[:16]
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return f"session-{ctx.session_id if ctx is not None else 'local'}"
