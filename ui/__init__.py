"""The console's Streamlit code (the engine in ``qflow`` never imports Streamlit).

:mod:`ui.page` draws any module's page from its registry entry (:mod:`qflow.core.commands`); :mod:`ui.hooks` holds what
is specific to one module (key figures, its figures as pure functions of the plan, its charts); :mod:`ui.jobs` runs the
engine in a worker pool with progress and Cancel.
"""
