"""The two rendering tricks (ui/widget_state.py), run in a real Streamlit script."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _script() -> None:
    import streamlit as st

    from ui import widget_state

    options = st.session_state.get("options", ["a", "b", "c"])
    widget_state.settle("pick", options, options[-1])
    st.selectbox("pick", options, key="pick")
    widget_state.reset_on("follow", st.session_state.get("sig", 0), "reset")
    st.text_input("follow", key="follow")
    widget_state.keep_only("kept", options, default=["c", "d"])
    st.multiselect("kept", options, key="kept")
    st.text(widget_state.renewed_key("slider", "renewals"))
    if st.button("renew"):
        widget_state.renew("renewals")
    built = widget_state.Prebuilt(lambda x: [x * 2], 3)
    st.text(f"{built.as_drawn(3)} {built.as_drawn(4)}")


def test_widget_state_helpers_move_widgets_before_they_draw() -> None:
    at = AppTest.from_function(_script).run()
    assert at.selectbox[0].value == "c", "no value yet: the default"
    assert at.text_input[0].value == "reset" and at.multiselect[0].value == ["c"], "the default, filtered"
    assert at.text[0].value == "slider_0" and at.text[1].value == "[6] [8]", "rebuilt only when the inputs differ"

    at.selectbox[0].set_value("a").run()
    at.text_input[0].set_value("mine").run()
    assert at.selectbox[0].value == "a" and at.text_input[0].value == "mine", "a person's choice stays"

    at.session_state["options"] = ["b", "c"]  # another run: "a" is not one of its options
    at.run()
    assert at.selectbox[0].value == "c" and at.multiselect[0].value == ["c"]
    assert at.text_input[0].value == "mine", "same signature: left alone"
    at.session_state["sig"] = 1
    at.button[0].click().run()
    assert at.text_input[0].value == "reset", "a new signature resets it"
    at.run()
    assert at.text[0].value == "slider_1", "renew gives the next key"
