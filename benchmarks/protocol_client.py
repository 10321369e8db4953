"""A Streamlit client that speaks the app's websocket protocol as a browser tab does, without drawing anything.

A tab opens `/_stcore/stream` with the subprotocol "streamlit", sends `BackMsg.rerun_script` (the page, its query
string and the widget values that changed) and reads `ForwardMsg`s until the script is idle again. This client
does the same with the protobufs of the installed streamlit (`streamlit.proto`), so a load test costs the server
what browsers would, and the clients themselves almost nothing (no layout, no Vega, no JavaScript).

What it keeps from the messages: the page list (navigation), each keyed widget's id and options (the element
ids end with the widget's key: `$$ID-<hash>-<key>`), exceptions, alert texts and toasts. What it leaves out:
the static files a fresh browser fetches (about 130 files, 3.9 MB, once per visitor; cached by browsers after),
and auto-reruns of `st.fragment(run_every=...)` (only the Train page's job panel has one).

Loopback only: `Visitor` refuses any host but 127.0.0.1, and every wait is bounded by `timeout_s`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import websockets
from streamlit.components.v2.bidi_component.main import _make_trigger_id
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

LOOPBACK = "127.0.0.1"
_OK = ("FINISHED_SUCCESSFULLY", "FINISHED_FRAGMENT_RUN_SUCCESSFULLY")
FINISHED_OK = {ForwardMsg.ScriptFinishedStatus.Value(s) for s in _OK}
RERUNNING = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_EARLY_FOR_RERUN")


class ProtocolError(RuntimeError):
    """The server did something a browser tab would show as broken: no answer in time, a closed socket, a page
    it could not find, a script that did not compile."""


@dataclass
class RunResult:
    seconds: float  # from sending the BackMsg to the script being idle again
    exceptions: list[str] = field(default_factory=list)  # st.exception elements (a traceback on the page)
    alerts: list[str] = field(default_factory=list)  # st.error/warning/info/success bodies
    toasts: list[str] = field(default_factory=list)
    messages: int = 0
    bytes: int = 0
    first_seen: dict[str, float] = field(default_factory=dict)  # watched text -> seconds until it first arrived


@dataclass
class Widget:
    id: str
    kind: str  # the element's proto type: slider, text_area, selectbox, checkbox, button, bidi_component, ...
    options: list[str]


class Visitor:
    """One browser tab: a websocket session on the app server at 127.0.0.1:`port`. `headers` are sent with the
    websocket's opening request (a proxy's X-Forwarded-For, for instance)."""

    def __init__(self, port: int, headers: dict[str, str] | None = None, timeout_s: float = 120.0) -> None:
        self.url = f"ws://{LOOPBACK}:{int(port)}/_stcore/stream"
        self.headers = dict(headers or {})
        self.timeout_s = timeout_s
        self.pages: dict[str, str] = {}  # url path ("" for the default page) -> page script hash
        self.widgets: dict[str, Widget] = {}  # widget key -> the widget drawn by the last run
        self.query = ""
        self.page = ""
        self.watch: tuple[str, ...] = ()  # texts whose first arrival in a markdown, caption or alert is timed
        self._ws: Any = None

    async def connect(self) -> None:
        self._ws = await asyncio.wait_for(
            websockets.connect(self.url, subprotocols=["streamlit"], max_size=None, additional_headers=self.headers),  # type: ignore[list-item]
            self.timeout_s,
        )

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def open(self, page: str, query: str = "") -> RunResult:
        """Go to a page (its url path, "" for the tour) with a query string, as a click in the menu or a link."""
        if self._ws is None:
            await self.connect()
        self.page, self.query = page, query
        msg = BackMsg()
        msg.rerun_script.query_string = query
        msg.rerun_script.page_name = page
        if page in self.pages:
            msg.rerun_script.page_script_hash = self.pages[page]
        self.widgets = {}
        return await self._run(msg)

    async def set_widget(self, key: str, **value: Any) -> RunResult:
        """Change one widget, e.g. set_widget("attn_text", string_value="..."): the rerun a browser sends."""
        widget = self._widget(key)
        state = WidgetState(id=widget.id, **value)
        return await self._rerun([state])

    async def choose(self, key: str, index: int) -> RunResult:
        """Move a select slider (the training step) to its option at `index`."""
        widget = self._widget(key)
        return await self._rerun([WidgetState(id=widget.id, string_array_value={"data": [widget.options[index]]})])

    async def commit_timeline(self, key: str, step: int) -> RunResult:
        """What ui/timeline.js sends when Play pauses or the scrubber is let go: its "commit" trigger."""
        widget = self._widget(key)
        trigger = json.dumps([{"event": "commit", "value": int(step)}])
        return await self._rerun([WidgetState(id=_make_trigger_id(widget.id, "events"), json_trigger_value=trigger)])

    async def click(self, key: str) -> RunResult:
        return await self._rerun([WidgetState(id=self._widget(key).id, trigger_value=True)])

    def keys(self, prefix: str = "") -> list[str]:
        return [k for k in self.widgets if k.startswith(prefix)]

    def _widget(self, key: str) -> Widget:
        if key not in self.widgets:
            raise ProtocolError(f"no widget {key!r} on page {self.page!r} (have {sorted(self.widgets)[:12]})")
        return self.widgets[key]

    async def _rerun(self, states: list[WidgetState]) -> RunResult:
        msg = BackMsg()
        msg.rerun_script.query_string = self.query
        msg.rerun_script.page_name = self.page
        msg.rerun_script.page_script_hash = self.pages.get(self.page, "")
        msg.rerun_script.widget_states.widgets.extend(states)
        return await self._run(msg)

    async def _run(self, msg: BackMsg) -> RunResult:
        if self._ws is None:
            raise ProtocolError("not connected")
        start = time.perf_counter()
        result = RunResult(0.0)
        drawn: dict[str, Widget] = {}
        await self._ws.send(msg.SerializeToString())
        finished = False
        deadline = start + self.timeout_s
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise ProtocolError(f"no idle script within {self.timeout_s:.0f} s")
            try:
                raw = await asyncio.wait_for(self._ws.recv(), left)
            except TimeoutError:
                raise ProtocolError(f"no idle script within {self.timeout_s:.0f} s") from None
            except websockets.ConnectionClosed as exc:
                raise ProtocolError(f"the server closed the socket: {exc}") from None
            result.messages += 1
            result.bytes += len(raw)
            fwd = ForwardMsg()
            fwd.ParseFromString(raw)
            kind = fwd.WhichOneof("type")
            if kind == "delta":
                self._read_delta(fwd, result, drawn, time.perf_counter() - start)
            elif kind == "navigation":
                self.pages = {p.url_pathname: p.page_script_hash for p in fwd.navigation.app_pages}
            elif kind == "page_info_changed":  # the browser's address bar follows: the next rerun sends it
                self.query = fwd.page_info_changed.query_string
            elif kind == "page_not_found":
                raise ProtocolError(f"page not found: {fwd.page_not_found.page_name!r}")
            elif kind == "script_finished":
                if fwd.script_finished not in FINISHED_OK and fwd.script_finished != RERUNNING:
                    raise ProtocolError(f"script did not run: status {fwd.script_finished}")
                finished = finished or fwd.script_finished in FINISHED_OK
            elif kind == "session_status_changed" and finished and not fwd.session_status_changed.script_is_running:
                break
        result.seconds = time.perf_counter() - start
        self.widgets.update(drawn)
        return result

    def _read_delta(self, fwd: ForwardMsg, result: RunResult, drawn: dict[str, Widget], elapsed: float) -> None:
        """What one element tells: an exception, an alert, a toast, a keyed widget, or a watched text's arrival."""
        delta = fwd.delta
        if delta.WhichOneof("type") != "new_element":
            return
        element = delta.new_element
        kind = element.WhichOneof("type")
        if kind is None:
            return
        body = getattr(element, kind)
        if kind == "exception":
            result.exceptions.append(f"{body.type}: {body.message}")
        elif kind == "alert":
            result.alerts.append(body.body)
        elif kind == "toast":
            result.toasts.append(body.body)
        if kind in ("markdown", "alert"):
            for text in self.watch:
                if text in body.body and text not in result.first_seen:
                    result.first_seen[text] = elapsed
        fields = type(body).DESCRIPTOR.fields_by_name
        element_id = body.id if "id" in fields else ""
        if isinstance(element_id, str) and element_id.startswith("$$ID-"):
            key = element_id.split("-", 2)[2]
            options = list(body.options) if "options" in fields else []
            # Pills and segmented controls hold messages (their label in `content`); the rest, strings.
            drawn[key] = Widget(element_id, kind, [getattr(o, "content", o) for o in options])
