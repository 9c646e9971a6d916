"""Home: what the console does, and a link to each module of the registry."""

import streamlit as st

from qflow.core.commands import available_commands
from qflow.core.models import list_models, models_dir
from ui.page import module_pages

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
for page, command in zip(module_pages(), available_commands(), strict=True):
    st.page_link(page, label=command.page_title, icon=command.icon)
    st.caption(command.description)

st.subheader("Trained models")
models = list_models()
if models:
    st.caption(f"In `{models_dir()}`; each module page offers its own under the `model` input.")
    st.dataframe([{"kind": m["kind"], "module": m["module"], "file": m["file"], "trained": m["created_at"],
                   "card sha256": (m["card_sha256"] or "")[:12], "qflow": m["qflow_version"]} for m in models], hide_index=True)
else:
    st.caption(f"None in `{models_dir()}` yet: `python -m qflow train KIND ...` trains one (power-model, "
               "contention-classifier, denoiser, contrastive) for its module's plans to reuse.")
