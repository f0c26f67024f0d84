"""Walking a flow tree, and printing it as the tutorial shows."""

from __future__ import annotations

from typing import Protocol, TextIO

from takler.core.node import Family, Node


class Visitor(Protocol):
    def visit(self, node: Node, level: int) -> None: ...


def pre_order_travel(node: Node, visitor: Visitor, level: int = 0) -> None:
    """Call ``visitor.visit(node, level)`` on ``node``, then on each child, depth first."""
    stack: list[tuple[Node, int]] = [(node, level)]
    while stack:
        current, depth = stack.pop()
        visitor.visit(current, depth)
        if isinstance(current, Family):
            stack.extend((child, depth + 1) for child in reversed(current.children))


class PrintVisitor:
    """Prints ``|- name [state]``, indented two spaces per level."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def visit(self, node: Node, level: int) -> None:
        self.stream.write(f"{'  ' * level}|- {node.name} [{node.state.value}]\n")
