"""QuantumFlow: planning engine for large GPU clusters.

Each module is a subpackage with one entry point (``qflow.routing.plan_routing``);
``qflow.core`` holds what they share. Nothing here imports Streamlit.
"""

from qflow._version import __version__

__all__ = ["__version__"]
