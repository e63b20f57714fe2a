"""Where in the YAML file a configuration problem is: `FILE:LINE: key.path: message`.

pydantic's error location is walked through the YAML node tree, so store IT is sent to the line
that is wrong; syntax errors, duplicate keys and unknown keys ("did you mean") likewise.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from agent.errors import ConfigError


def compose(text: str, name: str) -> tuple[yaml.Node | None, Any]:
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # the reader already refuses control characters here
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.YAMLError as exc:
        raise ConfigError(syntax_problem(exc, text, name)) from None
    except RecursionError:
        raise ConfigError(f"{name}:1: syntax: lists or mappings nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def key_lines(root: yaml.Node | None, name: str) -> tuple[dict[str, int], list[str]]:
    """The line of every key path (`kassa.secret_file`, `scanners[0].device`), and a problem
    for each key given twice in one mapping (YAML would keep the last one silently)."""
    lines: dict[str, int] = {}
    duplicates: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[str, yaml.Node]] = [("", root)] if root is not None else []
    while stack:
        path, node = stack.pop()
        if id(node) in seen:  # an alias: walked once (a "billion laughs" file stays linear)
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault(f"{path}[{i}]", item.start_mark.line + 1)
                stack.append((f"{path}[{i}]", item))
        elif isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                    continue
                child = f"{path}.{key.value}" if path else key.value
                line = key.start_mark.line + 1
                if key.value in keys:
                    duplicates.append(
                        f"{name}:{line}: {child}: duplicate key (first given on "
                        f"line {lines[child]}); give each key once"
                    )
                    continue
                keys.add(key.value)
                lines[child] = line
                stack.append((child, value))
    return lines, sorted(duplicates, key=line_of)


def line_of(problem: str) -> int:
    parts = problem.split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def syntax_problem(exc: yaml.YAMLError, text: str, name: str) -> str:
    """One `FILE:LINE: syntax: message` line, also for errors of the reader (bad characters).

    A scanner error is reported where the token began (the key without ':', the quote never
    closed), not where the scanner gave up, which is often lines later."""
    mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    context = getattr(exc, "context", None) or ""
    if isinstance(exc, yaml.scanner.ScannerError) and context_mark is not None:
        mark = context_mark
    if mark is not None:
        line = mark.line + 1
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
    else:
        line = 1
    message = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is context_mark and context.startswith("while scanning a simple key"):
        message = "a key without ':' (write KEY: VALUE)"
    elif mark is context_mark and context.startswith("while scanning a quoted scalar"):
        message = "a quote opened here is never closed"
    elif mark is context_mark and context:
        message = f"{context}: {message}"
    return f"{name}:{line}: syntax: {' '.join(message.split())}"


def describe(
    exc: ValidationError, root: yaml.Node, name: str, known_keys: Callable[[list[str]], list[str]]
) -> list[str]:
    """One `FILE:LINE: key.path: message` per pydantic error; `known_keys(parent)` names the
    keys a mapping may hold (for "did you mean")."""
    problems = []
    for error in exc.errors(include_url=False):
        keys, line = _locate(root, error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = _unknown_key_message(keys, known_keys)
        elif error["type"] == "string_pattern_mismatch" and keys and keys[-1] == "url":
            message = (
                "must be an http:// or https:// URL (no query: credentials go in ident/secret)"
            )
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif error["type"] == "union_tag_invalid":
            keys.append("type")
            message = "must be one of serial, hid, webcam, stdin"
        problems.append(f"{name}:{line}: {'.'.join(keys) or '(top)'}: {message}")
    return sorted(set(problems), key=line_of)


def _locate(root: yaml.Node, loc: Sequence[Any]) -> tuple[list[str], int]:
    """Follow a pydantic location through the YAML tree: the dotted path and its line."""
    node, keys, line = root, [], root.start_mark.line + 1
    for part in loc:
        child = _child(node, part)
        if child is None:
            if not _is_union_tag(node, part):
                keys.append(str(part))  # a missing key: named, at its parent's line
            continue
        key_node, node = child
        keys.append(f"[{part}]" if isinstance(part, int) else str(part))
        line = (key_node or node).start_mark.line + 1
    return [k for k in _join_indices(keys)], line


def _is_union_tag(node: yaml.Node, part: Any) -> bool:
    if not isinstance(node, yaml.MappingNode):
        return False
    return any(k.value == "type" and getattr(v, "value", None) == part for k, v in node.value)


def _child(node: yaml.Node, part: Any) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return None, node.value[part]
    return None


def _join_indices(keys: list[str]) -> list[str]:
    out: list[str] = []
    for key in keys:
        if key.startswith("[") and out:
            out[-1] += key
        else:
            out.append(key)
    return out


def _unknown_key_message(keys: list[str], known_keys: Callable[[list[str]], list[str]]) -> str:
    known = known_keys(keys[:-1])
    guess = difflib.get_close_matches(keys[-1] if keys else "", known, n=1)
    hint = f"; did you mean '{guess[0]}'?" if guess else ""
    return f"unknown key{hint}"


def model_keys(root: Any, scanners: tuple[Any, ...], parent: list[str]) -> list[str]:
    """The keys a config section may have (for "did you mean"): the fields of the model at
    `parent`, or of every scanner model under `scanners[N]` (a union)."""
    model: Any = root
    for key in parent:
        fields = getattr(model, "model_fields", {})
        annotation = getattr(fields.get(key.split("[")[0]), "annotation", None)
        if annotation is None or not hasattr(annotation, "model_fields"):
            if not key.startswith("scanners"):
                return []
            return sorted({name for scanner in scanners for name in scanner.model_fields})
        model = annotation
    return list(model.model_fields)
