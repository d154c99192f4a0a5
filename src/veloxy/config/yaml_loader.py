"""YAML reading that refuses what PyYAML silently accepts: duplicate keys.

Why: with the stock SafeLoader, a file that defines `api:` twice under `upstreams` keeps the
second definition and drops the first without a word, so half of someone's config disappears.
`StrictLoader` composes the node tree first, looks for repeated keys in every mapping (with
the key path and both line numbers), and only then builds Python objects. Merge keys (`<<:`)
are left alone: overriding merged keys is what they are for.

`read_yaml` turns every YAML failure into a `ConfigError` carrying the line and column.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from veloxy.errors import ConfigError

__all__ = ["DuplicateKey", "DuplicateKeysError", "StrictLoader", "read_yaml"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class DuplicateKey:
    """A key written twice in one mapping; lines are 1-based."""

    path: tuple[str | int, ...]
    line: int
    column: int
    first_line: int


class DuplicateKeysError(yaml.YAMLError):
    """The document repeats at least one key in a mapping."""

    def __init__(self, duplicates: list[DuplicateKey]) -> None:
        self.duplicates = duplicates
        super().__init__("; ".join(
            f"{'.'.join(map(str, d.path))}: duplicate key (line {d.line})" for d in duplicates))


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that raises DuplicateKeysError instead of keeping the last duplicate."""

    def get_single_data(self) -> object:
        node = self.get_single_node()
        if node is None:
            return None
        duplicates: list[DuplicateKey] = []
        _find_duplicates(node, (), duplicates, set())
        if duplicates:
            raise DuplicateKeysError(duplicates)
        return self.construct_document(node)


def _find_duplicates(node: Node, path: tuple[str | int, ...], found: list[DuplicateKey],
                     visited: set[int]) -> None:
    if id(node) in visited:  # an alias to a node already walked (also stops cycles)
        return
    visited.add(id(node))
    if isinstance(node, MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            segment: str | int = key_node.value if isinstance(key_node, ScalarNode) else "?"
            if isinstance(key_node, ScalarNode):
                identity = (key_node.tag, key_node.value)
                if identity in first:
                    mark = key_node.start_mark
                    found.append(DuplicateKey((*path, segment), mark.line + 1,
                                              mark.column + 1, first[identity]))
                else:
                    first[identity] = key_node.start_mark.line + 1
            _find_duplicates(value_node, (*path, segment), found, visited)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _find_duplicates(item, (*path, index), found, visited)


def read_yaml(text: str, source: str | None = None) -> object:
    """Parse one YAML document with StrictLoader; any failure becomes a ConfigError."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # safe: StrictLoader is a SafeLoader
    except DuplicateKeysError as exc:
        raise ConfigError([
            (".".join(map(str, d.path)),
             f"duplicate key (line {d.line}, column {d.column}; first at line {d.first_line})")
            for d in exc.duplicates], source=source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or "syntax error"
        if exc.context:  # PyYAML's own order: "while parsing X (line N), expected Y"
            started = exc.context_mark
            at = f" (line {started.line + 1})" if started and started is not mark else ""
            what = f"{exc.context}{at}, {what}"
        raise ConfigError([("", f"invalid YAML{where}: {what}")], source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"invalid YAML: {exc}")], source=source) from None
