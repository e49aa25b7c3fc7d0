"""Load a scenario file: strict YAML, then the typed model, with every problem located.

The YAML subset is what ``yaml.safe_load`` reads, minus explicit tags (``!!python/...``,
``!foo``, ``!!binary``) and duplicate keys, within limits that keep validation fast: at most
:data:`MAX_BYTES` of text, :data:`MAX_DEPTH` levels of nesting, :data:`MAX_ITEMS` entries in
one list or mapping and :data:`MAX_VALUES` values in all (a value reached through an alias
counts each time). Every problem is reported, each on one line::

    shop.yaml:23:11: faults[0].kind: unknown fault kind 'htp'; did you mean 'http'? ...

Loading is pure: it reads text and builds models, nothing else (a scenario with
``load.locustfile`` also has that file read and parsed, never imported:
:mod:`harness.scenario.userfile`).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.tokens import TagToken

from harness.errors import ScenarioError
from harness.files import read_bytes_limited
from harness.scenario.models import API_VERSION, FAULT_KINDS, MAX_ITEMS, SLO_KINDS, Scenario
from harness.scenario.userfile import locustfile_problem, resolve_locustfile

_Loc = Sequence[str | int]
_Problem = tuple[Mark | None, list[str | int], str]  # (where, field path, message)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_KINDS = {"faults": ("fault", FAULT_KINDS), "slos": ("SLO", SLO_KINDS)}
MAX_BYTES = 1024 * 1024  # a real scenario has a few kB
MAX_DEPTH = 32  # a real scenario nests about 6 deep
MAX_VALUES = 100_000  # scalars, lists and mappings, aliases counted each time they are used


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file.

    >>> scenario = load_scenario("scenarios/retries-mask-transient-errors.yaml")
    >>> scenario.metadata.name
    'retries-mask-transient-errors'

    Raises :class:`~harness.errors.ScenarioError` listing every problem as
    ``file:line:col: field.path: message``.
    """
    path = Path(path)
    try:
        # A FIFO or device is refused at once (reading one could block forever).
        text = read_bytes_limited(path, MAX_BYTES, "scenario file").decode("utf-8")
    except (OSError, ValueError) as error:
        raise ScenarioError(str(path), [f"{path}: cannot read the scenario: {error}"]) from None
    return load_scenario_text(text, source=str(path), base_dir=path.parent)


def load_scenario_text(
    text: str, source: str = "<string>", base_dir: Path | None = None
) -> Scenario:
    """Validate scenario YAML held in a string; ``source`` names it in error messages.

    ``load.locustfile`` is resolved against ``base_dir`` (the scenario file's folder;
    default: the working directory), checked, and kept as an absolute path.

    >>> text = Path("scenarios/retries-mask-transient-errors.yaml").read_text()
    >>> load_scenario_text(text, source="retries.yaml").duration
    36.0
    """
    if len(text) > MAX_BYTES:
        raise ScenarioError(source, [f"{source}:1:1: larger than {MAX_BYTES} characters"])
    root, data = _parse(text, source)
    problems: list[_Problem] = []
    if "apiVersion" not in data:
        hint = f"missing required field 'apiVersion'; begin with 'apiVersion: {API_VERSION}'"
        problems.append((root.start_mark, ["apiVersion"], hint))
    try:
        scenario = Scenario.model_validate(data, context={"skip_references": True})
    except ValidationError as error:
        problems += [_validation_problem(root, detail) for detail in error.errors()]
    if problems:
        raise ScenarioError(source, _render(source, problems)) from None
    references = [_reference_problem(root, *problem) for problem in scenario.reference_problems()]
    if references:
        raise ScenarioError(source, _render(source, references))
    return _with_locustfile(scenario, root, source, base_dir)


def _with_locustfile(
    scenario: Scenario, root: Node, source: str, base_dir: Path | None
) -> Scenario:
    """``scenario`` with its ``load.locustfile`` absolute, once the file is checked."""
    written = scenario.load.locustfile
    if written is None:
        return scenario
    path = resolve_locustfile(written, base_dir if base_dir is not None else Path.cwd())
    problem = locustfile_problem(path)
    if problem is not None:
        located = _reference_problem(root, ("load", "locustfile"), problem)
        raise ScenarioError(source, _render(source, [located]))
    load = scenario.load.model_copy(update={"locustfile": str(path)})
    return scenario.model_copy(update={"load": load})


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that notes which nodes carry an explicit tag and where it was written."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.tag_marks: list[Mark] = []
        self.tagged: dict[int, tuple[str, Mark]] = {}
        self.depth = 0

    def scan_tag(self) -> TagToken:
        token = super().scan_tag()
        self.tag_marks.append(token.start_mark)
        return token

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        tag: str | None = getattr(event, "tag", None)  # alias events have no tag
        self.depth += 1
        if self.depth > MAX_DEPTH:  # composing recurses: stop long before Python's limit
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark
            )
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if tag is not None and node is not None:
            # The tag may follow an anchor: point at the tag itself, not the anchor.
            start = event.start_mark
            mark = next((m for m in self.tag_marks if m.index >= start.index), start)
            self.tagged[id(node)] = (tag, mark)
        return node


def _parse(text: str, source: str) -> tuple[Node, Any]:
    """The node tree of ``text`` (kept for locating problems) and the data it stands for."""
    root = _compose(text, source)
    try:
        # Plain safe_load construction; it also flattens merge keys (<<) in the tree.
        return root, yaml.SafeLoader("").construct_document(root)
    except yaml.MarkedYAMLError as error:  # e.g. a list used as a mapping key
        raise ScenarioError(source, _render(source, [_syntax_problem(error)])) from None
    except ValueError as error:  # e.g. an impossible date such as 2024-13-01
        raise ScenarioError(source, [f"{source}:1:1: invalid YAML value: {error}"]) from None


def _compose(text: str, source: str) -> Node:
    """Parse ``text`` into a node tree, refusing tags, duplicate keys and non-mappings."""
    try:
        loader = _StrictLoader(text)
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        raise ScenarioError(source, _render(source, [_syntax_problem(error)])) from None
    except yaml.reader.ReaderError as error:  # a control character, say
        at = error.position
        line, column = text.count("\n", 0, at), at - text.rfind("\n", 0, at) - 1
        message = f"invalid YAML: character U+{error.character:04X} is not allowed"
        problem: _Problem = (Mark(source, at, line, column, None, 0), [], message)
        raise ScenarioError(source, _render(source, [problem])) from None
    if root is None:
        hint = "the file is empty; a scenario is a mapping starting with 'apiVersion: harness/v1'"
        raise ScenarioError(source, [f"{source}:1:1: {hint}"])
    problems: list[_Problem] = []
    for path, node in _walk(root):
        if id(node) in loader.tagged:
            tag, mark = loader.tagged[id(node)]
            written = tag.replace("tag:yaml.org,2002:", "!!", 1)
            problems.append((mark, path, f"YAML tags are not allowed (found {written!r})"))
        if isinstance(node, MappingNode | SequenceNode) and len(node.value) > MAX_ITEMS:
            what = "entries" if isinstance(node, MappingNode) else "items"
            message = f"{len(node.value)} {what}; at most {MAX_ITEMS} are allowed in one place"
            problems.append((node.start_mark, path, message))
        elif isinstance(node, MappingNode):
            problems.extend(_duplicate_keys(node, path))
    if not problems and _expanded_size(root) > MAX_VALUES:
        message = (
            f"the document expands to more than {MAX_VALUES} values "
            "(a value reached through an alias counts each time it is used)"
        )
        problems.append((root.start_mark, [], message))
    if problems:
        raise ScenarioError(source, _render(source, problems))
    if not isinstance(root, MappingNode):
        found = "a list" if isinstance(root, SequenceNode) else f"the value {root.value!r}"
        message = f"a scenario is a mapping of fields (apiVersion, metadata, ...), found {found}"
        raise ScenarioError(source, _render(source, [(root.start_mark, [], message)]))
    return root


def _walk(root: Node) -> Iterator[tuple[list[str | int], Node]]:
    """Every node with its path, visiting nodes shared through aliases only once."""
    seen: set[int] = set()
    stack: list[tuple[list[str | int], Node]] = [([], root)]
    while stack:
        path, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield path, node
        if isinstance(node, MappingNode):
            for key, value in node.value:
                stack.append((path, key))
                stack.append(([*path, _key_name(key)], value))
        elif isinstance(node, SequenceNode):
            stack.extend(([*path, index], item) for index, item in enumerate(node.value))


def _expanded_size(root: Node) -> int:
    """How many values the document stands for once aliases are expanded (memoized, so the
    time is linear in the number of distinct nodes; capped just past MAX_VALUES). A node that
    contains itself (``&a [*a]``) expands without end: it counts as too many."""
    size: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: met again means a cycle
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children: list[Node] = []
        if isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, SequenceNode):
            children = list(node.value)
        if children_done:
            open_nodes.discard(id(node))
            total = 1 + sum(size[id(child)] for child in children)
            size[id(node)] = min(total, MAX_VALUES + 1)
            continue
        if id(node) in size:
            continue
        if id(node) in open_nodes or any(id(child) in open_nodes for child in children):
            return MAX_VALUES + 1
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in size)
    return size[id(root)]


def _duplicate_keys(node: MappingNode, path: list[str | int]) -> Iterator[_Problem]:
    first: dict[tuple[str, str], Node] = {}
    for key, _ in node.value:
        if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
            continue
        identity = (key.tag, key.value)
        if identity in first:
            line = first[identity].start_mark.line + 1
            message = f"duplicate key {key.value!r} (first defined on line {line})"
            yield key.start_mark, [*path, key.value], message
        else:
            first[identity] = key


def _key_name(key: Node) -> str:
    return str(key.value) if isinstance(key, ScalarNode) else "?"


def _syntax_problem(error: yaml.MarkedYAMLError) -> _Problem:
    message = f"invalid YAML: {(error.problem or error.context or '?').removeprefix('but ')}"
    if error.context and error.problem and error.context_mark is not None:
        message += f" ({error.context} on line {error.context_mark.line + 1})"
    return error.problem_mark or error.context_mark, [], message


# --------------------------------------------------------------------------- locating


def _locate(root: Node, loc: _Loc) -> tuple[list[str | int], Node | None, Node]:
    """Follow a pydantic location through the node tree: (path, key node, value node).

    Location parts absent from the YAML (union labels such as ``http`` or ``int``,
    ``[key]``, a missing field) are skipped, so the walk stops at the deepest node present.
    """
    path: list[str | int] = []
    key: Node | None = None
    node = root
    for part in loc:
        if isinstance(node, MappingNode):
            if part == _scalar_at(node, "kind"):
                continue  # the discriminator label pydantic inserts after a tagged item
            # Search from the end: after merge keys are flattened, later pairs win.
            pair = next((p for p in reversed(node.value) if _key_name(p[0]) == str(part)), None)
            if pair is not None:
                key, node = pair
                path.append(_key_name(key))
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            key, node = None, node.value[part]
            path.append(part)
    return path, key, node


def _scalar_at(node: MappingNode, name: str) -> str | None:
    for key, value in node.value:
        if _key_name(key) == name and isinstance(value, ScalarNode):
            return str(value.value)
    return None


def _validation_problem(root: Node, detail: ErrorDetails) -> _Problem:
    loc, kind = detail["loc"], detail["type"]
    path, key, node = _locate(root, loc)
    if kind == "extra_forbidden":
        return (key or node).start_mark, path, _unknown_field(loc[-1], _model_at(loc[:-1]))
    if kind == "missing":
        name = loc[-1]
        if name == "kind" and loc[0] in _KINDS:
            return node.start_mark, [*path, name], _kind_required(str(loc[0]))
        return node.start_mark, [*path, name], f"missing required field '{name}'"
    if kind == "union_tag_not_found" and isinstance(node, MappingNode):
        return node.start_mark, [*path, "kind"], _kind_required(str(loc[0]))
    if kind == "union_tag_invalid":
        tag_path, _, tag_node = _locate(root, [*loc, "kind"])
        found = str(detail.get("ctx", {}).get("tag", ""))
        return tag_node.start_mark, tag_path, _unknown_kind(str(loc[0]), found)
    mark = (key or node).start_mark if "[key]" in loc else node.start_mark
    return mark, path, _humane(detail)


def _reference_problem(root: Node, loc: _Loc, message: str) -> _Problem:
    path, key, node = _locate(root, loc)
    # An unknown name used as a mapping key (e.g. replicas: {catalgo: 2}) points at the key.
    at_key = (
        key is not None
        and isinstance(loc[-1], str)
        and _model_at(loc[:-1], any_member=True) is None
    )
    return (key if at_key and key is not None else node).start_mark, path, message


# --------------------------------------------------------------------------- messages


def _humane(detail: ErrorDetails) -> str:
    kind, message, found = detail["type"], detail["msg"], detail["input"]
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of fields, found {_shown(found)}"
    if kind == "list_type":
        return f"expected a list, found {_shown(found)}"
    message = message.replace("Input should be", "expected", 1)
    return f"{message} (found {_shown(found)})"


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_field(name: str | int, model: type[BaseModel] | None) -> str:
    message = f"unknown field {str(name)!r}"
    if model is None:
        return message
    valid = [field.alias or field_name for field_name, field in model.model_fields.items()]
    return message + _suggestion(str(name), valid, "fields")


def _unknown_kind(section: str, found: str) -> str:
    noun, kinds = _KINDS[section]
    return f"unknown {noun} kind {found!r}" + _suggestion(found, list(kinds), "kinds")


def _kind_required(section: str) -> str:
    noun, kinds = _KINDS[section]
    return f"field 'kind' is required; valid {noun} kinds: {', '.join(kinds)}"


def _suggestion(found: str, valid: list[str], noun: str) -> str:
    close = difflib.get_close_matches(found, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return f"{hint} valid {noun}: {', '.join(valid)}"


def _render(source: str, problems: list[_Problem]) -> list[str]:
    """Format problems as ``source:line:col: path: message``, in file order, once each."""
    lines: dict[str, tuple[int, int]] = {}
    for mark, path, message in problems:
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        where = f"{_dotted(path)}: " if path else ""
        lines.setdefault(f"{source}:{line}:{col}: {where}{message}", (line, col))
    return sorted(lines, key=lines.__getitem__)


def _dotted(path: Sequence[str | int]) -> str:
    """``("faults", 0, "abort")`` → ``faults[0].abort``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


# --------------------------------------------------------------------------- model lookup


def _model_at(loc: _Loc, *, any_member: bool = False) -> type[BaseModel] | None:
    """The scenario model found at ``loc`` (``None`` for a dict, a list or a scalar).

    Where ``loc`` names a union of models without its discriminator (``faults[0]``),
    ``any_member`` returns one of them instead of ``None``.
    """
    candidates: list[Any] = [Scenario]
    for part in loc:
        tagged = [c for c in candidates if _is_model(c) and part in _kinds_of(c)]
        if tagged:  # a discriminator label picks one member of a union
            candidates = tagged
            continue
        following: list[Any] = []
        for candidate in candidates:
            args = get_args(candidate)
            if _is_model(candidate):
                fields = candidate.model_fields.items()
                following += [f.annotation for n, f in fields if part in (n, f.alias)]
            elif get_origin(candidate) is list and isinstance(part, int):
                following.append(args[0])
            elif get_origin(candidate) is dict:
                following.append(args[1])
        candidates = [member for c in following for member in _members(c)]
    models: list[type[BaseModel]] = [c for c in candidates if _is_model(c)]
    if any_member and models and len(models) == len(candidates):
        return models[0]
    return models[0] if len(models) == 1 else None


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a possibly ``Annotated``, optional or union type."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg) if m is not type(None)]
    return [annotation]


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


def _kinds_of(model: type[BaseModel]) -> tuple[Any, ...]:
    field = model.model_fields.get("kind")
    if field is None or get_origin(field.annotation) is not Literal:
        return ()
    return get_args(field.annotation)
