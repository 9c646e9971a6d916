"""The console's login (ui/auth.py): open on loopback without a token, a password box once a token is set,
a refusal when bound beyond loopback with no login configured."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

TOKEN = "console-token-0123456789"


def _page() -> None:
    import streamlit as st

    from ui.auth import require_login

    require_login()
    st.markdown("the protected page")


def _shown(at: AppTest) -> list[str]:
    return [element.value for element in at.markdown]


def test_loopback_without_a_token_is_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QFLOW_API_TOKEN", raising=False)
    at = AppTest.from_function(_page)
    at.run(timeout=30)
    assert not at.exception and "the protected page" in _shown(at)


def test_a_token_guards_every_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFLOW_API_TOKEN", TOKEN)
    at = AppTest.from_function(_page)
    at.run(timeout=30)
    assert "the protected page" not in _shown(at) and len(at.text_input) == 1
    at.text_input[0].input(TOKEN + "x")
    at.button[0].click()
    at.run(timeout=30)
    assert "the protected page" not in _shown(at) and [e.value for e in at.error] == ["Wrong token."]
    at.text_input[0].input(TOKEN)
    at.button[0].click()
    at.run(timeout=30)
    assert not at.exception and "the protected page" in _shown(at) and not at.text_input
    at.run(timeout=30)  # the session stays logged in
    assert "the protected page" in _shown(at)


def test_beyond_loopback_without_a_login_every_page_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QFLOW_API_TOKEN", raising=False)
    import streamlit as st

    real = st.get_option
    monkeypatch.setattr(st, "get_option", lambda name: "0.0.0.0" if name == "server.address" else real(name))
    at = AppTest.from_function(_page)
    at.run(timeout=30)
    assert "the protected page" not in _shown(at)
    assert "without a login" in at.error[0].value and "QFLOW_API_TOKEN" in at.error[0].value


def test_a_malformed_token_is_one_line_on_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QFLOW_API_TOKEN", "short")
    at = AppTest.from_function(_page)
    at.run(timeout=30)
    assert "the protected page" not in _shown(at) and not at.exception
    assert at.error[0].value.startswith("The console is misconfigured: QFLOW_API_TOKEN: (environment): not a usable")
