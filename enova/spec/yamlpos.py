"""YAML loading that remembers where every value came from.

`parse_documents(text)` composes a multi-document YAML stream with PyYAML's SafeLoader and builds
plain Python values from the node graph itself, recording for each key path (a tuple of mapping
keys and list indices, `("spec", "engine", "args", "max_num_seqs")`) the line of its key and
the line where its value starts. Scalars are built by the SafeLoader's own constructors, so
YAML 1.1 resolution (`yes` is True, `0x1f` is 31, ...) is exactly what `yaml.safe_load` gives.

Problems come back as data, not exceptions: a syntax error ends the stream (documents before it
are kept); a duplicate key is reported at its second occurrence and the document is kept (the
last value wins, as in PyYAML); a document that cannot be built (an unknown tag, a recursive
alias, aliases that would expand past `MAX_ALIAS_EXPANSIONS` or `MAX_VALUES`: a "billion
laughs" file of a few hundred bytes) is dropped. Used by `enova.spec.loader`; knows nothing
about enova's documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

KeyPath = tuple[Any, ...]

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# Aliases let a few hundred bytes describe a tree of billions of values (nested anchors, each
# used ten times). Every document's expanded size is computed on the node graph first, in time
# proportional to the text, and a document past either bound is refused before it is built.
# Real specs use a handful of aliases (`<<: *common`) and a few hundred values per document.
MAX_ALIAS_EXPANSIONS = 1_000
MAX_VALUES = 100_000


@dataclass(frozen=True)
class Position:
    """Where a value is: `key_line` is the line of its key (of the item, in a list; of the
    document start, for the root), `value_line` where the value itself starts. 1-based."""

    key_line: int
    value_line: int


@dataclass(frozen=True)
class YamlProblem:
    """Something wrong with the YAML itself, at `line` (1-based) and key `path` (may be empty)."""

    line: int
    path: KeyPath
    message: str


@dataclass(frozen=True)
class YamlDocument:
    """One document of a stream: its value, the line it starts on, and a position per key path."""

    data: Any
    line: int
    positions: dict[KeyPath, Position] = field(repr=False)

    def has(self, path: KeyPath) -> bool:
        """Whether `path` was written in the file (rather than left to a default)."""
        return tuple(path) in self.positions

    def position(self, path: KeyPath) -> Position:
        """The position of `path`, or of its nearest ancestor that was written in the file."""
        path = tuple(path)
        while path not in self.positions:
            path = path[:-1]
        return self.positions[path]


class _SyntaxProblem(Exception):
    """Raised on the fast path so the stream is re-read by the pure-Python parser."""


def parse_documents(text: str) -> tuple[list[YamlDocument], list[YamlProblem]]:
    """Every document of the stream `text` that could be built, and every problem found.

    Empty documents (`---` alone) come back as documents whose data is None. Valid YAML is
    read with libyaml when available; a stream with a syntax error is read again with the
    pure-Python parser, whose messages are the more helpful ones."""
    if _Loader is not yaml.SafeLoader:
        try:
            return _parse(text, _Loader, fast=True)
        except _SyntaxProblem:
            pass
    return _parse(text, yaml.SafeLoader, fast=False)


def _parse(text: str, loader_class: Any, fast: bool) -> tuple[list[YamlDocument], list[YamlProblem]]:
    documents: list[YamlDocument] = []
    problems: list[YamlProblem] = []
    loader = loader_class(text)
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
            except yaml.YAMLError as error:
                if fast:
                    raise _SyntaxProblem() from error
                if isinstance(error, yaml.reader.ReaderError):
                    line = text.count("\n", 0, error.position) + 1
                    problems.append(YamlProblem(line, (), f"invalid YAML: {error.reason} in the file's characters"))
                elif isinstance(error, yaml.MarkedYAMLError):
                    problems.append(YamlProblem(_line(error.problem_mark or error.context_mark), (), _describe(error)))
                else:
                    raise
                break
            too_big = _expansion_problem(node)
            if too_big is not None:
                problems.append(too_big)
                continue
            builder = _Builder(loader)
            try:
                data = builder.build(node, (), _line(node.start_mark))
            except yaml.MarkedYAMLError as error:
                if fast:
                    raise _SyntaxProblem() from error
                problems.extend(builder.problems)
                problems.append(YamlProblem(_line(error.problem_mark or error.context_mark), (), _describe(error)))
                continue
            problems.extend(builder.problems)
            documents.append(YamlDocument(data, _line(node.start_mark), builder.positions))
    finally:
        loader.dispose()
    return documents, problems


# libyaml's parser (when PyYAML was built with it) composes the same nodes and marks about
# ten times faster than the pure-Python one; the pure-Python one is the fallback.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Builder:
    """Builds Python values from one document's nodes, recording positions and duplicate keys."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.positions: dict[KeyPath, Position] = {}
        self.problems: list[YamlProblem] = []
        self._building: set[int] = set()  # ids of collection nodes on the stack: recursive aliases

    def build(self, node: Node, path: KeyPath, key_line: int) -> Any:
        value_line = _line(node.start_mark)
        if isinstance(node, ScalarNode) and node.value == "" and not node.style:
            value_line = key_line  # an empty value has no place of its own; yaml marks the next token
        self.positions[path] = Position(key_line, value_line)
        if isinstance(node, ScalarNode):
            return self.loader.construct_object(node)
        if id(node) in self._building:
            raise ConstructorError(None, None, "recursive alias: a collection contains itself", node.start_mark)
        self._building.add(id(node))
        try:
            if isinstance(node, MappingNode) and node.tag == _MAP_TAG:
                return self._mapping(node, path)
            if isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
                items = enumerate(node.value)
                return [self.build(item, (*path, index), _line(item.start_mark)) for index, item in items]
            raise ConstructorError(None, None, f"unsupported tag {node.tag!r}", node.start_mark)
        finally:
            self._building.discard(id(node))

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self._key(key_node)
            line = _line(key_node.start_mark)
            if key in first_line:
                self.problems.append(YamlProblem(line, (*path, key), f"duplicate key; first at line {first_line[key]}"))
            else:
                first_line[key] = line
            result[key] = self.build(value_node, (*path, key), line)
        for merge in merges:
            self._merge(result, merge, path)
        return result

    def _merge(self, result: dict[Any, Any], merge: Node, path: KeyPath) -> None:
        """`<<: *base` or `<<: [*a, *b]`: add the keys not already set, earlier sources first."""
        sources = merge.value if isinstance(merge, SequenceNode) else [merge]
        for source in sources:
            if not isinstance(source, MappingNode):
                message = "a merge key (<<) needs a mapping or a list of mappings"
                raise ConstructorError(None, None, message, source.start_mark)
            if id(source) in self._building:
                raise ConstructorError(None, None, "recursive alias: a mapping merges itself", source.start_mark)
            self._building.add(id(source))
            try:
                for key_node, value_node in source.value:
                    if key_node.tag != _MERGE_TAG:
                        key = self._key(key_node)
                        if key not in result:
                            result[key] = self.build(value_node, (*path, key), _line(key_node.start_mark))
                for key_node, value_node in source.value:
                    if key_node.tag == _MERGE_TAG:
                        self._merge(result, value_node, path)
            finally:
                self._building.discard(id(source))

    def _key(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            message = "a mapping key must be a plain value, not a list or mapping"
            raise ConstructorError(None, None, message, node.start_mark)
        return self.loader.construct_object(node)


def _expansion_problem(root: Node) -> YamlProblem | None:
    """A problem if the document `root` would expand past MAX_ALIAS_EXPANSIONS aliases or
    MAX_VALUES values, at the first (in document order) value whose expansion is too big."""
    first_path: dict[int, KeyPath] = {}  # id of each distinct node -> the path it is first met at
    sizes: dict[int, tuple[int, int]] = {}  # id -> (values, alias expansions), capped past the bounds
    on_stack: set[int] = set()  # a recursive alias: left to the builder to report

    def measure(node: Node, path: KeyPath) -> tuple[int, int] | YamlProblem:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_stack:
            return 1, 0
        first_path.setdefault(key, path)
        values, aliases = 1, 0
        if isinstance(node, (MappingNode, SequenceNode)):
            on_stack.add(key)
            try:
                for child, child_path in _children(node, path):
                    if id(child) in first_path:
                        aliases += 1  # met before: this is an alias of it
                    measured = measure(child, child_path)
                    if isinstance(measured, YamlProblem):
                        return measured
                    values += measured[0]
                    aliases += measured[1]
                    if values > MAX_VALUES or aliases > MAX_ALIAS_EXPANSIONS:
                        message = (f"invalid YAML: aliases expand past {MAX_ALIAS_EXPANSIONS} alias uses or "
                                   f"{MAX_VALUES} values here (an alias bomb?); nest fewer anchors")
                        return YamlProblem(_line(node.start_mark), first_path[key], message)
            finally:
                on_stack.discard(key)
        sizes[key] = (values, aliases)
        return sizes[key]

    measured = measure(root, ())
    return measured if isinstance(measured, YamlProblem) else None


def _children(node: Node, path: KeyPath) -> list[tuple[Node, KeyPath]]:
    """The child nodes of a collection node with their key paths (keys of a mapping included)."""
    if isinstance(node, SequenceNode):
        return [(item, (*path, index)) for index, item in enumerate(node.value)]
    children: list[tuple[Node, KeyPath]] = []
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, ScalarNode) else "?"
        children.append((key_node, path))
        children.append((value_node, path if key_node.tag == _MERGE_TAG else (*path, key)))
    return children


def _line(mark: Any) -> int:
    return mark.line + 1 if mark is not None else 0


def _describe(error: yaml.MarkedYAMLError) -> str:
    message = f"invalid YAML: {error.problem}" if error.problem else "invalid YAML"
    if error.context and error.context_mark is not None and error.problem_mark is not None:
        if error.context_mark.line != error.problem_mark.line:
            return f"{message} ({error.context} at line {_line(error.context_mark)})"
    if error.context:
        return f"{message} ({error.context})"
    return message
