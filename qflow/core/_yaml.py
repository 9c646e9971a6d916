"""YAML reading for :mod:`qflow.core.io`, kept apart so that PyYAML is imported only when YAML is read."""

from __future__ import annotations

from typing import Any

import yaml

from qflow.core.errors import InputError
from qflow.core.io import _Unreadable
from qflow.core.limits import check_limit

__all__ = ["parse_yaml_document"]


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose integers over Python's digit limit become markers, not a ValueError."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int | _Unreadable:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            return _Unreadable(str(node.value))


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _alias_expansion(root: yaml.Node, source: str) -> int:
    """Nodes the document gains by expanding its aliases (expanded size minus distinct nodes).

    An alias is a reference to an already-built node, so PyYAML's output
    shares objects; expanded (by ``json.dumps`` of a plan, for one) 2.6 KB of
    nested aliases become hundreds of megabytes. Iterative post-order walk
    with memoised subtree sizes; a node reached from inside itself is a
    recursive alias, refused (no plan could be written from it).
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise InputError(source, "(file)", "recursive YAML alias", "a document without self-referencing anchors")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)] - len(sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def parse_yaml_document(text: str, source: str) -> Any:
    """One YAML document's data: safe loader, bounded alias expansion (numbers not yet checked)."""
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # the reader refuses unprintable characters here already
        node = loader.get_single_node()
        if node is None:
            return None
        check_limit(_alias_expansion(node, source), "yaml_aliases", source, "(aliases)")
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"(line {mark.line + 1})" if mark is not None else "(file)"
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
        raise InputError(source, where, "invalid YAML", "a YAML document", problem) from None
    except RecursionError:
        raise InputError(source, "(file)", "YAML nested too deeply", "a YAML document") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data
