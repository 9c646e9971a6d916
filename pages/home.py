"""Home: what the console does, and a link to each working module."""

import streamlit as st

from ui.modules import MODULE_PAGES, PLANNED_PAGES
from ui.navigation import leave_legacy_pages_mode

leave_legacy_pages_mode()

st.title("QuantumFlow")
st.markdown(
    """
QuantumFlow plans work on GPU clusters. Each module takes your input files (the bundled samples if you
upload nothing), runs an optimiser, measures the result against the simple methods an operator would
otherwise use on the same input, and gives you a JSON plan to download.

Every plan says which path was requested, which path actually ran, and the reason for any fallback.
Quantum paths are real PennyLane circuits (QAOA, variational circuits, phase estimation) run on a
state-vector simulator (`lightning.qubit`, else `default.qubit`), so they work on sub-problems of the
sizes a simulator holds (at most 24 qubits per circuit); every QAOA sub-problem is also solved exactly,
so the plan reports how close QAOA came, and a quantum answer is used only where it does better.
"""
)
st.subheader("Modules")
for module in MODULE_PAGES:
    st.page_link(module.path, label=module.title, icon=module.icon)
    st.caption(module.summary)
missing = [page.title for page in PLANNED_PAGES if page not in MODULE_PAGES]
if missing:
    st.caption(f"Not available in this build: {', '.join(missing)} (listed here once their pages exist).")
