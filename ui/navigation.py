"""Keep every page under app.py's ``st.navigation``, even on a first visit by URL.

Streamlit decides once per server process, when the first session starts,
whether the ``pages/`` folder beside the entry point means its legacy
multipage mode; only a run of ``st.navigation`` (in app.py) switches that off.
So the first visit straight to ``/routing`` after the server starts runs the
page alone: no wide layout, and a sidebar listing the files (app, about,
home, routing) instead of app.py's navigation (streamlit/streamlit#10276
review notes the same). Renaming ``pages/`` would avoid it, but the project
layout names that folder.
"""

from __future__ import annotations

import streamlit as st

__all__ = ["leave_legacy_pages_mode"]


def leave_legacy_pages_mode() -> None:
    """If Streamlit ran this page in legacy mode, switch the mode off and rerun through app.py.

    The rerun keeps the page's URL path, which app.py's navigation maps to the
    same page. This reads a private Streamlit flag; if a release moves it, the
    function does nothing (and the quirk above comes back), it never fails.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:
        return
    if getattr(PagesManager, "uses_pages_directory", None) is True:
        PagesManager.uses_pages_directory = False
        st.rerun()
