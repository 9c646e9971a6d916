"""Per-module page hooks, looked up by module name by :func:`ui.page.page_hooks` (see :mod:`ui.page`)."""
