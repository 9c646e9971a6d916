"""About: version, the command line, where the engine lives, and the routing settings."""

import streamlit as st

import qflow
from qflow.routing import RoutingConfig
from ui.navigation import leave_legacy_pages_mode
from ui.widgets import field_table

leave_legacy_pages_mode()

st.title("About QuantumFlow")
st.markdown(f"**qflow {qflow.__version__}**: planning engine for GPU clusters, with this console as one front end.")

st.subheader("Command line")
st.markdown("The same engine, config names and plan JSON as this console:")
st.code(
    "python -m qflow routing --tokens sample_data/routing/tokens.csv \\\n"
    "    --model-graph sample_data/routing/model_graph.json --out plan.json\n"
    "python -m qflow routing --tokens ... --model-graph ... --qaoa --hqc --set max_qubits=12 --out plan.json\n"
    "python -m qflow --help",
    language="bash",
)
st.markdown("Exit codes: 0 done; 2 bad input or an infeasible instance (one `error: FILE: field: ...` line); 1 a bug.")

st.subheader("Where things live")
st.markdown(
    """
- `qflow/` is the engine: `qflow.core` (plan envelope, config base, loaders, quantum backend, errors) and one
  subpackage per module, e.g. `qflow.routing.plan_routing`. It does not import Streamlit.
- `app.py`, `pages/` and `ui/` are this console: pages turn widgets into a config, call the engine, and draw.
- `sample_data/` holds the inputs the pages use when nothing is uploaded.
"""
)

st.subheader("Routing settings")
st.caption("Page toggles, CLI flags (`--capacity-factor 1.5`, `--qaoa/--no-qaoa`) and config-file keys share these names.")
st.dataframe(field_table(RoutingConfig), hide_index=True)
