"""Who may use the console: :func:`require_login`, called once from ``app.py`` before any page runs.

In order:

1. OIDC login settings in Streamlit's secrets (an ``[auth]`` section, ``.streamlit/secrets.toml``): Streamlit's own
   ``st.login``; the page stops until the visitor is logged in.
2. A token (``QFLOW_API_TOKEN`` or ``QFLOW_API_TOKEN_FILE``, the API's): a password box; the entered token is compared
   in constant time and the session remembers a match.
3. Neither: allowed only while the console listens on loopback (the default, ``server.address = "127.0.0.1"``); bound
   beyond it, every page stops with one line saying what to configure (``qflow app`` already refuses to start that way).
"""

from __future__ import annotations

import streamlit as st

from qflow.core.access import configured_token, is_loopback, token_matches
from qflow.core.errors import QflowError

__all__ = ["require_login"]

#: ``st.session_state`` key set once the session entered the right token.
LOGGED_IN_KEY = "qflow_token_ok"


def _oidc_configured() -> bool:
    """Whether Streamlit's secrets have an ``[auth]`` section (what ``st.login`` needs)."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 -- no secrets file, or an unreadable one: no OIDC
        return False


def _ask_for_token(token: str) -> None:
    """A password box; stops the script until the session entered ``token``."""
    if st.session_state.get(LOGGED_IN_KEY):
        return
    st.title("QuantumFlow")
    with st.form("qflow_login"):
        entered = st.text_input("Access token", type="password", help="The value of QFLOW_API_TOKEN on the server")
        submitted = st.form_submit_button("Log in")
    if submitted:
        if token_matches(entered, token):
            st.session_state[LOGGED_IN_KEY] = True
            st.rerun()
        st.error("Wrong token.")
    st.stop()


def require_login() -> None:
    """Stop the page unless this visitor may use the console (see the module docstring)."""
    if _oidc_configured():
        if not st.user.is_logged_in:
            st.title("QuantumFlow")
            st.button("Log in", on_click=st.login)
            st.stop()
        return
    try:
        token = configured_token()
    except QflowError as exc:
        st.error(f"The console is misconfigured: {exc.message}")
        st.stop()
    if token is not None:
        _ask_for_token(token)
        return
    address = st.get_option("server.address")
    if not (address and is_loopback(str(address))):
        st.error("This console listens beyond this machine without a login: set QFLOW_API_TOKEN "
                 "(or an [auth] section in .streamlit/secrets.toml) and restart it.")
        st.stop()
