"""QuantumFlow console: ``streamlit run app.py`` (or ``python -m qflow app``).

Navigation only: Home, one page per working module (:data:`ui.modules.MODULE_PAGES`),
Compare (run history), About. Pages compute nothing at import; the engine runs when a page's Run
button is pressed.
"""

import streamlit as st

from ui.auth import require_login
from ui.modules import MODULE_PAGES

st.set_page_config(layout="wide", page_title="QuantumFlow", page_icon=":material/hub:")
require_login()

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    *(st.Page(m.path, title=m.title, icon=m.icon, url_path=m.name) for m in MODULE_PAGES),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("pages/about.py", title="About", icon=":material/info:", url_path="about"),
]
st.navigation(pages).run()
