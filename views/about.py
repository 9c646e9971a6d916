"""About: version, the command line, where the engine lives, and every module's settings."""

import streamlit as st

import qflow
from qflow.core.commands import available_commands
from ui.widgets import field_table

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
- `app.py`, `views/` and `ui/` are this console: one generic module page (`ui/page.py`) draws every module of
  the registry (`qflow.core.commands`), with each module's charts in `ui/hooks/<module>.py`.
- `sample_data/` holds the inputs the pages use when nothing is uploaded.
"""
)

for command in available_commands():
    st.subheader(f"{command.page_title} settings")
    st.caption(f"`python -m qflow {command.name}`: page toggles, CLI flags (`--name VALUE`, `--toggle/--no-toggle`) "
               "and config-file keys share these names.")
    st.dataframe(field_table(command.config_cls), hide_index=True)
