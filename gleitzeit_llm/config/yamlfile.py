"""A YAML file read with the line of every entry: the one reader for pool and workflow files.

A file that is missing, unreadable or not YAML is a :class:`~gleitzeit_llm.errors.ConfigError`
(or the caller's subclass) naming the file, and for bad YAML the line and column, e.g.
``pool.yaml, line 4, column 15: malformed YAML: expected ',' or ']', but got '<block mapping start>'
(while parsing a flow sequence at line 3)``. Later errors ask :meth:`YamlFile.line` where a field sits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gleitzeit_llm.errors import ConfigError

__all__ = ["YamlFile", "read_yaml"]

_SYNTAX_HINT = "fix the YAML syntax there (indentation, a missing ':', an unclosed quote or bracket)"


@dataclass(frozen=True)
class YamlFile:
    """A parsed YAML document (``data``) and its node tree, for line numbers."""

    path: str
    data: Any
    root: Any = None

    def line(self, path: Sequence[str | int]) -> int | None:
        """The 1-based line of the entry at ``path``: a mapping entry's key, a list item.

        When the file stops short of ``path``, the line of the deepest part it has; ``()`` is the
        document's first line.
        """
        node = self.root
        if node is None:
            return None
        line: int = node.start_mark.line + 1
        for seg in path:
            kind = getattr(node, "id", None)
            if kind == "mapping":
                match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(seg)), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif kind == "sequence" and isinstance(seg, int) and seg < len(node.value):
                node = node.value[seg]
                line = node.start_mark.line + 1
            else:
                break
        return line


def read_yaml(
    path: str | os.PathLike[str],
    *,
    what: str = "configuration file",
    error: type[ConfigError] = ConfigError,
    field: str | None = None,
    label: str = "",
    not_found_hint: str | None = None,
) -> YamlFile:
    """Read and parse the YAML file at ``path``; every failure is an ``error`` on ``field``.

    ``what`` names the file in messages (``"workflow file"``), ``label`` prefixes them (the
    environment variable that named the file).
    """
    import yaml  # only when a file is read: importing the package stays light

    file = Path(path).expanduser()
    shown = os.fspath(path)
    problem: ConfigError | None = None
    text = ""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = error(f"{label}{what} not found: {shown}", field=field, value=shown, hint=not_found_hint)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = error(f"{label}cannot read {what} {file}: {reason}", field=field, value=str(file))
    if problem is not None:  # raised outside ``except``: no chained OSError in the traceback
        raise problem
    root = data = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters already
        try:
            root = loader.get_single_node()  # parsed once: the nodes give lines, the data is built from them
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        problem = error(
            f"{label}{file}{_where(exc)}: malformed YAML: {_problem(exc)}",
            field=field,
            value=str(file),
            hint=_SYNTAX_HINT,
        )
    if problem is not None:
        raise problem
    return YamlFile(str(file), data, root)


def _where(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _problem(exc: Exception) -> str:
    problem: str = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        problem += f" ({context} at line {context_mark.line + 1})"
    return problem
