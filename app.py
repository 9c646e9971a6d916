"""QuantumFlow console: ``streamlit run app.py`` (or ``python -m qflow app``).

Navigation only: Home, one page per module of the registry (:func:`qflow.core.commands.available_commands`, drawn by
:func:`ui.page.render`), Compare (run history), About. Pages compute nothing at import; the engine runs when a page's
Run button is pressed.
"""

import streamlit as st

from ui.auth import require_login
from ui.page import module_pages

st.set_page_config(layout="wide", page_title="QuantumFlow", page_icon=":material/hub:")
require_login()

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    *module_pages(),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("views/about.py", title="About", icon=":material/info:", url_path="about"),
]
st.navigation(pages).run()
