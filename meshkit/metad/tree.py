"""The in-memory trees (data, mapping) and access rules.

A node with children is a directory: its own value, if a key sits exactly there
too, is hidden (so ``/a = x`` plus ``/a/b = y`` reads as ``{"a": {"b": "y"}}``
whatever order the keys were written in; metad's result depends on the order).
Values are strings; a directory reads as a dict; empty directories never appear.

Access rules (yunify/metad's ``/v1/rule``): per host, a list of ``{"path", "mode"}``
with mode 0 (forbid) or 1 (read). A path component ``*`` matches any name; an
exact name beats ``*``; the deepest rule on a path wins. A host without rules may
read exactly the data paths its mapping links to. Unlike metad, a leaf is shown
only where the effective mode is *read*: a leaf sitting on the way to a deeper
allowed path stays hidden.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from meshkit.metad.paths import Parts, split_path

__all__ = [
    "FORBID",
    "READ",
    "AccessNode",
    "Node",
    "Rule",
    "Tree",
    "Value",
    "build_access",
    "flatten",
    "parse_rules",
    "readable",
    "visible",
]

Value: TypeAlias = "str | dict[str, Value]"
FORBID = 0
READ = 1


class Node:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.value: str | None = None
        self.children: dict[str, Node] = {}

    def read(self) -> Value | None:
        """Everything under this node (no access control); None when empty."""
        if self.children:
            out: dict[str, Value] = {}
            for name, child in self.children.items():
                v = child.read()
                if v is not None:
                    out[name] = v
            return out or None
        return self.value


class Tree:
    """A tree of string leaves addressed by path components."""

    def __init__(self) -> None:
        self.root = Node()
        self.size = 0  # keys held

    def find(self, parts: Parts) -> Node | None:
        node = self.root
        for p in parts:
            nxt = node.children.get(p)
            if nxt is None:
                return None
            node = nxt
        return node

    def get(self, parts: Parts) -> Value | None:
        node = self.find(parts)
        return None if node is None else node.read()

    def put(self, parts: Parts, value: str) -> bool:
        """Set a key; True when the visible state may have changed (the value differs)."""
        node = self.root
        for p in parts:
            nxt = node.children.get(p)
            if nxt is None:
                nxt = node.children[p] = Node()
            node = nxt
        if node.value == value:
            return False
        if node.value is None:
            self.size += 1
        node.value = value
        return True

    def delete(self, parts: Parts) -> bool:
        """Remove a key (not its children); prune empty nodes. True when it existed."""
        path: list[tuple[Node, str]] = []
        node = self.root
        for p in parts:
            nxt = node.children.get(p)
            if nxt is None:
                return False
            path.append((node, p))
            node = nxt
        if node.value is None:
            return False
        node.value = None
        self.size -= 1
        while path and node.value is None and not node.children:
            parent, name = path.pop()
            del parent.children[name]
            node = parent
        return True

    def items(self) -> Iterator[tuple[Parts, str]]:
        stack: list[tuple[Parts, Node]] = [((), self.root)]
        while stack:
            parts, node = stack.pop()
            if node.value is not None and parts:
                yield parts, node.value
            for name, child in node.children.items():
                stack.append(((*parts, name), child))


def flatten(value: Value, base: Parts = ()) -> list[tuple[Parts, str]]:
    """Leaves of a value as (path, string)."""
    if isinstance(value, str):
        return [(base, value)]
    out: list[tuple[Parts, str]] = []
    for k, v in value.items():
        out.extend(flatten(v, (*base, k)))
    return out


# ---- access rules ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    path: str
    mode: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "mode": self.mode}


class AccessNode:
    __slots__ = ("children", "mode")

    def __init__(self) -> None:
        self.mode: int | None = None
        self.children: dict[str, AccessNode] = {}

    def child(self, name: str) -> AccessNode | None:
        c = self.children.get(name)
        return c if c is not None else self.children.get("*")


def build_access(rules: list[Rule]) -> AccessNode:
    root = AccessNode()
    for r in rules:
        node = root
        for p in split_path(r.path):
            nxt = node.children.get(p)
            if nxt is None:
                nxt = node.children[p] = AccessNode()
            node = nxt
        node.mode = r.mode
    return root


def parse_rules(raw: object) -> list[Rule]:
    """Validate one host's rule list (the manage API's body or a stored value).

    Raises ValueError naming the first broken rule.
    """
    if not isinstance(raw, list):
        raise ValueError("rules must be a JSON list of {\"path\": ..., \"mode\": 0|1}")
    seen: set[str] = set()
    out: list[Rule] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ValueError(f"rule {i} is not an object")
        extra = set(item) - {"path", "mode"}
        if extra:
            raise ValueError(f"rule {i} has unknown fields {sorted(extra)}")
        path, mode = item.get("path"), item.get("mode")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"rule {i}: path must be a string starting with '/'")
        parts = split_path(path)
        if not isinstance(mode, int) or isinstance(mode, bool) or mode not in (FORBID, READ):
            raise ValueError(f"rule {i}: mode must be 0 (forbid) or 1 (read)")
        norm = "/" + "/".join(parts)
        if norm in seen:
            raise ValueError(f"rule {i}: path {norm} is given twice")
        seen.add(norm)
        out.append(Rule(norm, mode))
    return out


def rules_from_text(text: str) -> list[Rule]:
    return parse_rules(json.loads(text))


def _step(an: AccessNode | None, mode: int | None, name: str
          ) -> tuple[bool, AccessNode | None, int | None]:
    cn = an.child(name) if an is not None else None
    if cn is not None:
        allowed = bool(cn.children) or cn.mode == READ
        return allowed, cn, (cn.mode if cn.mode is not None else mode)
    return mode == READ, None, mode


def _visible_value(node: Node, an: AccessNode | None, mode: int | None) -> Value | None:
    if node.children:
        out: dict[str, Value] = {}
        for name, child in node.children.items():
            ok, can, cmode = _step(an, mode, name)
            if not ok:
                continue
            v = _visible_value(child, can, cmode)
            if v is not None:
                out[name] = v
        return out or None
    if node.value is not None and mode == READ:
        return node.value
    return None


def visible(tree: Tree, access: AccessNode, parts: Parts, *, root_empty: bool = False
            ) -> Value | None:
    """What ``access`` lets a host read at ``parts``; None when nothing (404).

    ``root_empty``: at the root answer ``{}`` rather than None when nothing is visible.
    """
    node: Node | None = tree.root
    an: AccessNode | None = access
    mode = access.mode
    for p in parts:
        assert node is not None
        node = node.children.get(p)
        if node is None:
            return None
        ok, an, mode = _step(an, mode, p)
        if not ok:
            return None
    assert node is not None
    v = _visible_value(node, an, mode)
    if v is None and root_empty and not parts:
        return {}
    return v


def readable(access: AccessNode, parts: Parts) -> bool:
    """Whether the key at ``parts`` (present or not) is readable under ``access``."""
    an: AccessNode | None = access
    mode = access.mode
    for p in parts:
        ok, an, mode = _step(an, mode, p)
        if not ok:
            return False
    return mode == READ
