"""Streamlit helpers shared by the console's pages.

Pages stay thin: they turn widgets into a config and input files, call the
engine through :mod:`ui.run`, and render through :mod:`ui.charts`,
:mod:`ui.summary` and :mod:`ui.plan_view`. :mod:`ui.charts` and
:mod:`ui.summary` do not import Streamlit, so they are tested on plain plans.
"""
