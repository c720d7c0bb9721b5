"""Reading spec files into validated documents, with every problem located by file and line.

`load_specs(path)` reads one YAML file or a directory tree of them, validates each document
against `enova.spec.models`, then checks what spans documents: duplicate names and references
(Deployment.spec.slo, LoadProfile.spec.target, LoadProfile.spec.slo). It keeps going after a
bad file or document and raises one `SpecError` carrying every issue, each written as
`specs/llama.yaml:14 spec.replicas: must be >= 0 (got -1)`. The CLI, the planner and the
reconcile loop call it; it reads the spec files and nothing else. `present_as` reads a copy
(a git snapshot in a temporary folder) as if it were at the folder it was taken from.
Checks made later by other layers (vLLM's own engine arguments) locate their issues with
`Located.issue`.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, Union, get_args

import pydantic
from pydantic import TypeAdapter, ValidationError

from enova.errors import SpecError, SpecIssue
from enova.spec.models import DOCUMENT_KINDS, SLO, Deployment, Document, Gateway, LoadProfile, Monitoring
from enova.spec.yamlpos import KeyPath, YamlDocument, parse_documents

T = TypeVar("T")

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Located(Generic[T]):
    """A validated document and where it was read: `file` (absolute), `line` (1-based) of its start,
    and `yaml`, the positions of its keys (None for a document built in code, as enode's)."""

    doc: T
    file: Path
    line: int
    yaml: Union[YamlDocument, None] = field(default=None, repr=False, compare=False)

    def line_of(self, path: KeyPath, *, value: bool = False) -> int:
        """The line of the key `path` (a tuple such as ("spec", "engine", "args", "max_num_seqs")),
        or of where its value starts with `value`; the nearest ancestor's line when `path` was
        not written in the file; the document's line without positions."""
        if self.yaml is None:
            return self.line
        position = self.yaml.position(tuple(path))
        return position.value_line if value else position.key_line

    def issue(self, path: KeyPath, message: str, *, value: bool = False) -> SpecIssue:
        """A SpecIssue about `path` in this document, named and located as load_specs names its own."""
        return SpecIssue(_shown(self.file), self.line_of(path, value=value), _dotted(tuple(path)), message)


@dataclass(frozen=True)
class SpecSet:
    """Every document under `root`, by kind, each dict sorted by name."""

    root: Path
    deployments: dict[str, Located[Deployment]]
    slos: dict[str, Located[SLO]]
    load_profiles: dict[str, Located[LoadProfile]]
    gateway: Union[Located[Gateway], None] = None
    monitoring: Union[Located[Monitoring], None] = None

    @property
    def default_deployment(self) -> Union[str, None]:
        """The deployment /generate goes to: the one marked serving.default, or the only one."""
        marked = [n for n, d in self.deployments.items() if d.doc.spec.serving.default]
        if marked:
            return marked[0]
        return next(iter(self.deployments)) if len(self.deployments) == 1 else None


def load_specs(path: Union[Path, str], *, present_as: Union[Path, str, None] = None) -> SpecSet:
    """Read and validate the spec file `path`, or every *.yaml / *.yml file under the directory
    `path` (recursively, in sorted order, skipping hidden files and folders).

    With `present_as`, the files are read from `path` but named as if `path` were `present_as`
    (a file for a file, a folder for a folder): every Located.file, SpecSet.root and error
    message, and so every relative path resolved against a spec file's folder (token_file, a
    ./model folder), is under `present_as`. Nothing under `present_as` is read.

    Raises SpecError with every issue found: YAML errors, invalid documents, duplicate names,
    dangling references, a missing path or a directory without spec files."""
    root = _absolute(path)
    shown_root = _absolute(present_as) if present_as is not None else root
    files = _spec_files(root, shown_root)
    reader = _Reader()
    for file in files:
        reader.read(file, shown_root / file.relative_to(root))
    reader.check_across_documents()
    if reader.issues:
        raise SpecError(reader.issues)
    by_kind: dict[str, dict[str, Located[Any]]] = {kind: {} for kind in DOCUMENT_KINDS}
    for entry in reader.entries:
        by_kind[entry.kind][entry.name] = Located(entry.model, entry.file, entry.yaml.line, entry.yaml)
    return SpecSet(
        root=shown_root,
        deployments=dict(sorted(by_kind["Deployment"].items())),
        slos=dict(sorted(by_kind["SLO"].items())),
        load_profiles=dict(sorted(by_kind["LoadProfile"].items())),
        gateway=next(iter(by_kind["Gateway"].values()), None),
        monitoring=next(iter(by_kind["Monitoring"].values()), None),
    )


def _absolute(path: Union[Path, str]) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def _spec_files(root: Path, shown_root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise SpecError([SpecIssue(_shown(shown_root), 0, "", "no such file or directory")])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files += [Path(folder, name) for name in names if name.endswith(SPEC_SUFFIXES) and not name.startswith(".")]
    if not files:
        raise SpecError([SpecIssue(_shown(shown_root), 0, "", "no spec files (*.yaml, *.yml) in this directory")])
    return sorted(files)


def _shown(file: Path) -> str:
    """How a file is named in messages: relative to the working directory when under it."""
    try:
        return str(file.relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(file)


@dataclass(frozen=True)
class _Entry:
    """A document with a known kind and name, valid (`model` set) or not."""

    kind: str
    name: str
    file: Path
    yaml: YamlDocument
    model: Any

    @property
    def name_place(self) -> str:
        return f"{_shown(self.file)}:{self.yaml.position(('metadata', 'name')).key_line}"


_DOCUMENT = TypeAdapter(Document)

# Each reference: (kind of the referring document, field path, kind referred to).
_REFERENCES = (
    ("Deployment", ("spec", "slo"), "SLO"),
    ("LoadProfile", ("spec", "target"), "Deployment"),
    ("LoadProfile", ("spec", "slo"), "SLO"),
)

# Kinds of which a spec set holds at most one document.
_SINGLETONS = ("Gateway", "Monitoring")


class _Reader:
    """Collects documents and issues over all files of one `load_specs` call."""

    def __init__(self) -> None:
        self.issues: list[SpecIssue] = []
        self.entries: list[_Entry] = []  # valid documents
        self.declared: list[_Entry] = []  # every document with a kind and a name, valid or not

    def read(self, file: Path, presented: Path) -> None:
        """Read `file`, naming it `presented` (the same path unless load_specs' present_as)."""
        shown = _shown(presented)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            self.issues.append(SpecIssue(shown, 0, "", f"cannot read: {error}"))
            return
        documents, problems = parse_documents(text)
        self.issues += [SpecIssue(shown, p.line, _dotted(p.path), p.message) for p in problems]
        for document in documents:
            if document.data is None:
                continue  # an empty document
            if not isinstance(document.data, dict):
                message = "a document must be a mapping with apiVersion, kind, metadata and spec"
                self.issues.append(SpecIssue(shown, document.line, "", f"{message} (got {_got(document.data)})"))
                continue
            self._validate(presented, shown, document)

    def _validate(self, file: Path, shown: str, document: YamlDocument) -> None:
        data = document.data
        kind, metadata = data.get("kind"), data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        model = None
        try:
            model = _DOCUMENT.validate_python(data)
        except ValidationError as error:
            self.issues += [_issue(shown, document, detail) for detail in error.errors()]
        if isinstance(kind, str) and kind in DOCUMENT_KINDS and isinstance(name, str):
            entry = _Entry(kind, name, file, document, model)
            self.declared.append(entry)
            if model is not None:
                self.entries.append(entry)

    def check_across_documents(self) -> None:
        """Duplicate names per kind, then references, then singletons, over every file read."""
        self._check_references()
        self._check_singletons()

    def _check_singletons(self) -> None:
        """At most one Gateway and one Monitoring document, and at most one deployment with serving.default."""
        for kind in _SINGLETONS:
            documents = [e for e in self.declared if e.kind == kind]
            for extra in documents[1:]:
                line = extra.yaml.position(("kind",)).key_line
                self.issues.append(SpecIssue(_shown(extra.file), line, "kind",
                                             f"only one {kind} document is allowed; first at {documents[0].name_place}"))
        defaults = [e for e in self.entries if e.kind == "Deployment" and e.model.spec.serving.default]
        for extra in defaults[1:]:
            line = extra.yaml.position(("spec", "serving", "default")).key_line
            self.issues.append(SpecIssue(
                _shown(extra.file), line, "spec.serving.default",
                f'only one deployment may be the default; "{defaults[0].name}" at {defaults[0].name_place} is too'))

    def _check_references(self) -> None:
        first: dict[tuple[str, str], _Entry] = {}
        for entry in self.declared:
            earlier = first.setdefault((entry.kind, entry.name), entry)
            if earlier is not entry:
                message = f'duplicate {entry.kind} "{entry.name}"; first defined at {earlier.name_place}'
                line = entry.yaml.position(("metadata", "name")).key_line
                self.issues.append(SpecIssue(_shown(entry.file), line, "metadata.name", message))
        defined: dict[str, list[_Entry]] = {kind: [] for kind in DOCUMENT_KINDS}
        for (kind, _), entry in sorted(first.items()):
            defined[kind].append(entry)
        for entry in self.entries:
            for kind, path, target_kind in _REFERENCES:
                if entry.kind != kind:
                    continue
                target = getattr(getattr(entry.model, path[0]), path[1])
                if target is None or (target_kind, target) in first:
                    continue
                if defined[target_kind]:
                    known = ", ".join(f"{e.name} in {_shown(e.file)}" for e in defined[target_kind])
                    message = f'no {target_kind} named "{target}" (defined: {known})'
                else:
                    message = f'no {target_kind} named "{target}" (no {target_kind} is defined)'
                line = entry.yaml.position(path).key_line
                self.issues.append(SpecIssue(_shown(entry.file), line, _dotted(path), message))


# ---------------------------------------------------------------------------------------------
# pydantic's errors, rewritten for people

_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
}
_OTHER_MESSAGES = {"invalid_key": "must be a string key"}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_NO_GOT = {"missing", "extra_forbidden", "union_tag_not_found"}


def _issue(shown: str, document: YamlDocument, detail: Any) -> SpecIssue:
    """One pydantic error as a SpecIssue: field path from the document root, line, message."""
    kind_tag = detail["type"]
    loc = list(detail["loc"])
    if loc and loc[0] in DOCUMENT_KINDS:
        loc = loc[1:]  # the discriminated union's tag
    is_key = bool(loc) and loc[-1] == "[key]"
    if is_key:
        loc = loc[:-1]
    path = tuple(loc)
    value = detail["input"]

    hint = ""
    if kind_tag in ("union_tag_invalid", "union_tag_not_found"):
        path = ("kind",)
        value = document.data.get("kind")
        if kind_tag == "union_tag_not_found":
            message = "required field missing"
        else:
            message = f"unknown kind; expected one of: {', '.join(sorted(DOCUMENT_KINDS))}"
            hint = _did_you_mean(value, sorted(DOCUMENT_KINDS))
    elif kind_tag == "missing":
        message = "required field missing"
    elif kind_tag == "extra_forbidden":
        message, hint = _unknown_field(document.data.get("kind"), path)
    else:
        message, hint = _message(kind_tag, detail, path, value)

    if kind_tag == "missing":
        line = document.position(path[:-1]).key_line
    elif kind_tag in _TYPE_MESSAGES:
        line = document.position(path).value_line
    else:
        line = document.position(path).key_line

    show_value = (
        kind_tag not in _NO_GOT
        and not is_key
        and document.has(path)
        and not (kind_tag == "value_error" and _model_at(DOCUMENT_KINDS.get(document.data.get("kind")), path))
    )  # a model's own check (an SLO needs an objective) is about the whole mapping: no value to show
    if show_value:
        message += f" (got {_got(value)})"
    message += hint
    return SpecIssue(shown, line, _dotted(path), message)


def _message(kind_tag: str, detail: Any, path: KeyPath, value: Any) -> tuple[str, str]:
    """A short message for one pydantic error, and a did-you-mean hint (or "")."""
    ctx = detail.get("ctx") or {}
    if kind_tag in _TYPE_MESSAGES:
        if kind_tag == "string_type" and (isinstance(value, bool) or value is None):
            return _TYPE_MESSAGES[kind_tag], "; YAML reads yes/no/on/off/true/false/null unquoted as that value: quote it"
        return _TYPE_MESSAGES[kind_tag], ""
    if kind_tag in _BOUNDS:
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {_BOUNDS[kind_tag]} {bound}", ""
    if kind_tag in ("value_error", "assertion_error"):
        return str(ctx.get("error", detail["msg"])), ""
    if kind_tag == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty", ""
        return f"must be at least {ctx['min_length']} characters", ""
    if kind_tag == "string_too_long":
        return f"must be at most {ctx['max_length']} characters", ""
    if kind_tag == "literal_error":
        expected = re.findall(r"'((?:[^'\\]|\\.)*)'", ctx.get("expected", ""))
        if path == ("apiVersion",):
            message = f"unknown apiVersion; expected one of: {', '.join(expected)}"
        elif len(expected) == 1:
            message = f"must be {expected[0]}"
        else:
            message = f"must be one of: {', '.join(expected)}"
        return message, _did_you_mean(value, expected)
    if kind_tag in _OTHER_MESSAGES:
        return _OTHER_MESSAGES[kind_tag], ""
    msg = str(detail["msg"])
    return msg[:1].lower() + msg[1:], ""


def _unknown_field(kind: Any, path: KeyPath) -> tuple[str, str]:
    model = _model_at(DOCUMENT_KINDS.get(kind), path[:-1])
    if model is None:
        return "unknown field", ""
    fields = sorted(model.model_fields)
    return f"unknown field; expected one of: {', '.join(fields)}", _did_you_mean(path[-1], fields)


def _did_you_mean(value: Any, choices: list[str]) -> str:
    if not isinstance(value, str) or len(choices) < 2:
        return ""
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _model_at(model: Any, path: KeyPath) -> Any:
    """The pydantic model class that validates the mapping at `path`, or None."""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool) and model is not None:
            continue  # an item of a list of models: the same model validates it
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _model_in(model.model_fields[part].annotation)
    return model


def _model_in(annotation: Any) -> Any:
    if inspect.isclass(annotation) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else f".{part}"
    return text.lstrip(".")


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
