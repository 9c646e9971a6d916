"""The engine modules the console lists: one entry per working module.

``app.py`` builds the navigation from this table and the Home page links
every entry, so a module appears in exactly one place once it works.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModulePage", "MODULE_PAGES"]


@dataclass(frozen=True)
class ModulePage:
    """One module's page."""

    name: str  #: engine module name, also the page's URL path
    title: str
    path: str  #: page script, relative to the repository root (where app.py is)
    icon: str
    summary: str  #: one sentence for the Home page


MODULE_PAGES: tuple[ModulePage, ...] = (
    ModulePage(
        name="routing",
        title="Routing",
        path="pages/routing.py",
        icon=":material/alt_route:",
        summary="Assign the tokens of one MoE layer step to experts under capacity, close to their expert's node, "
        "and compare with hash routing, top-1 gating and greedy balancing on the same input.",
    ),
)
