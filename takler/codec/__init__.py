"""The codec: bunches, flows and changes to plain JSON-able dicts and JSON text, and back.

A node is ``{"kind", "name", definition keys..., state keys..., "children"}``
(the "Data format of a bunch" in the project's interfaces). Rules:

* Dumps omit a key whose value is None, an empty list or an empty dict;
  loading reads a missing key as that default. Booleans, zeros and empty
  strings are always written.
* ``state=False`` gives a pure definition (what a client loads);
  ``state=True`` adds run-time state; ``secrets=True`` adds task passwords.
* Loading builds each node through the model's own methods (``add_event``,
  ``add_limit``...) so every check of the model applies; where a new node
  needs none of them (a trigger, children already checked here) it takes the
  model's unchecked path (``_put_expr``, ``_adopt_children``). Then it sets
  the state fields directly. ``"kind"`` is looked up in a fixed table: data never
  names code. Any problem raises :class:`CodecError` naming the node path and
  the field, and nothing half-built is returned.
* Schema 1 is current. Schema 0 (no ``"schema"`` key; each node's ``"status"``
  held what schema 1 calls its status, a task's real one, with suspension
  only in ``"suspended"``; no ``"flags"`` or ``"late"``) is upgraded on load.
* The store keeps a node's state apart from its flow's definition:
  :func:`dump_node_state` gives that compact state (which also omits False
  flags) and ``load_flow(definition, states=...)`` puts it back. A limit's
  maximum is part of that state too, since operators alter it at run time.
* Times are naive, in the flow clock, as ISO 8601 text.

The package holds: :mod:`~takler.codec.dump` (model to data),
:mod:`~takler.codec.load` (data to model, with :mod:`~takler.codec.state`
for the state keys), :mod:`~takler.codec.text` (JSON text) and
:mod:`~takler.codec.base` (what dump and load share: schema, key tables,
converter, checks). Every name is imported from here, as before the split;
importing the package also registers the model's classes with the converter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from takler.codec.base import SCHEMA, _converter
from takler.codec.dump import (
    FRESH_TASK_STATE,
    FRESH_TASK_STATE_TEXT,
    dump_bunch,
    dump_change,
    dump_node,
    dump_node_state,
)
from takler.codec.dump import is_fresh_task as is_fresh_task
from takler.codec.load import load_bunch, load_flow
from takler.codec.text import dumps, loads
from takler.core.bunch import Bunch
from takler.core.change import Change
from takler.core.node import Flow, Node

__all__ = [
    "FRESH_TASK_STATE",
    "FRESH_TASK_STATE_TEXT",
    "SCHEMA",
    "dump_bunch",
    "dump_change",
    "dump_node",
    "dump_node_state",
    "dumps",
    "load_bunch",
    "load_flow",
    "loads",
]


def _is(cls: type) -> Callable[[Any], bool]:
    return lambda t: isinstance(t, type) and issubclass(t, cls)


# The model's classes hold forward references cattrs cannot resolve: match by predicate.
_converter.register_unstructure_hook_func(_is(Bunch), dump_bunch)
_converter.register_unstructure_hook_func(_is(Node), dump_node)
_converter.register_unstructure_hook_func(_is(Change), dump_change)
_converter.register_structure_hook_func(_is(Bunch), lambda data, _: load_bunch(data))
_converter.register_structure_hook_func(_is(Flow), lambda data, _: load_flow(data))
