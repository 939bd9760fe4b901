"""From pydantic's errors to one :class:`~gleitzeit_llm.errors.ConfigError`.

Every problem in one validation becomes a line naming its source: the field path
(``instances[1].url``), or the environment variable that set it, or the file and line; then the value
given (secrets masked: header values, URL credentials) and what is allowed, with a "did you mean"
for a misspelt field. The validators in :mod:`.models` raise :class:`_Invalid` to control that text.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gleitzeit_llm.errors import ConfigError
from gleitzeit_llm.ollama.timeouts import TIMEOUT_HINT, Timeouts
from gleitzeit_llm.ollama.urls import URL_HINT, redact_url

if typing.TYPE_CHECKING:
    from gleitzeit_llm.config.yamlfile import YamlFile

_M = TypeVar("_M", bound=BaseModel)


class _Invalid(ValueError):
    """A validator's failure: pydantic keeps the exception (``ctx["error"]``), so the converter
    reads the text, hint and exact location from it."""

    def __init__(
        self,
        text: str,
        *,
        hint: str | None = None,
        sub_loc: tuple[int | str, ...] = (),
        value: Any = None,
        show_value: bool = True,
    ):
        super().__init__(text)
        self.text = text
        self.hint = hint
        self.sub_loc = sub_loc  # appended to pydantic's loc: a list validator can point at one item
        self.value = value
        self.show_value = show_value


def _validate(cls: type[_M], run: Callable[[], _M], origin: _Origin | None = None) -> _M:
    """``run()``, with a ValidationError turned into one ConfigError (raised without the chain)."""
    error = None
    try:
        return run()
    except ValidationError as exc:
        error = _config_error(exc, cls, origin)
    raise error


# --------------------------------------------------------------------------------------------------
# From pydantic's errors to one ConfigError


@dataclass
class _Origin:
    """Where the validated data came from, to point each problem at its source."""

    file: str | None = None
    yaml: YamlFile | None = None  # the document read, for line numbers
    via: str | None = None  # the environment variable that named the file
    prefix: tuple[str, ...] = ()  # where the pool section sits in the document
    env: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)  # loc pattern -> variable

    def env_var(self, loc: tuple[Any, ...]) -> tuple[str, int] | None:
        """The variable that set ``loc`` (the most specific pattern wins) and its pattern's length."""
        matches = [
            (len(pattern), var)
            for pattern, var in self.env
            if len(pattern) <= len(loc) and all(p in ("*", s) for p, s in zip(pattern, loc, strict=False))
        ]
        if not matches:
            return None
        depth, var = max(matches)
        return var, depth

    def line(self, loc: tuple[Any, ...]) -> int | None:
        return self.yaml.line((*self.prefix, *loc)) if self.yaml is not None else None


_MISSING = object()


@dataclass
class _Problem:
    loc: tuple[Any, ...]
    text: str
    hint: str | None = None
    value: Any = _MISSING
    show_value: bool = True  # False when the text already names the value


def _path(loc: Iterable[Any]) -> str:
    out = ""
    previous: Any = None
    for seg in loc:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif previous == "headers":
            out += f"[{seg!r}]"
        else:
            out += ("." if out else "") + str(seg)
        previous = seg
    return out


def _secret(loc: tuple[Any, ...]) -> bool:
    return "headers" in loc


def _show(value: Any, loc: tuple[Any, ...] = ()) -> str:
    """A value for a message: short, with secrets masked, never a whole mapping."""
    if _secret(loc):
        return "'***'"
    if isinstance(value, str):
        text = repr(redact_url(value))
        return text if len(text) <= 80 else text[:76] + "...'"
    if value is None or isinstance(value, (bool, int, float, enum.Enum)):
        return repr(value.value if isinstance(value, enum.Enum) else value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
        text = redact_url(repr(list(value)))
        return text if len(text) <= 80 else f"a list of {len(value)} items"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the data at ``loc`` (for field names in unknown-field errors)."""
    current: Any = root
    for seg in loc:
        if isinstance(seg, int):
            continue
        if (
            not (isinstance(current, type) and issubclass(current, BaseModel))
            or seg not in current.model_fields
        ):
            return None
        current = _model_in(current.model_fields[seg].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


_SYNONYMS = {
    "base_url": "url",
    "host": "url",
    "address": "url",
    "endpoint": "url",
    "name": "id",
    "concurrency": "max_concurrent",
    "max_parallel": "max_concurrent",
    "num_parallel": "max_concurrent",
    "parallel": "max_concurrent",
    "model": "models",
    "tag": "tags",
    "header": "headers",
    "instance": "instances",
    "servers": "instances",
}


def _suggest(name: str, model: type[BaseModel]) -> str | None:
    valid = list(model.model_fields)
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in valid:
        return key
    if _SYNONYMS.get(key) in valid:
        return _SYNONYMS[key]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return close[0]
    return _nested_path(model, key)


def _nested_path(model: type[BaseModel], key: str) -> str | None:
    """A field written one level too high: ``strategy`` at the top is ``load_balancing.strategy``."""
    for name, info in model.model_fields.items():
        sub = _model_in(info.annotation)
        if sub is None or info.is_required():  # not into instances: a URL at the top is another mistake
            continue
        if key in sub.model_fields:
            return f"{name}.{key}"
        deeper = _nested_path(sub, key)
        if deeper:
            return f"{name}.{deeper}"
    return None


_TIMEOUT_FIELDS = frozenset(f.name for f in dataclasses.fields(Timeouts))
_SECONDS_HINT = re.compile(r"timeout|interval|backoff|^(connect|first_byte|idle|total)$")


def _describe(err: Mapping[str, Any], root: type[BaseModel]) -> _Problem:
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input", _MISSING)
    name = str(loc[-1]) if loc and not isinstance(loc[-1], int) else ""

    if kind == "value_error" and isinstance(ctx.get("error"), _Invalid):
        exc: _Invalid = ctx["error"]
        if exc.sub_loc:
            loc = loc + exc.sub_loc
            value = exc.value
        return _Problem(loc, exc.text, exc.hint, value, exc.show_value)
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        valid = list(model.model_fields) if model else []
        suggestion = _suggest(str(loc[-1]), model) if model else None
        text = "unknown field" + (f"; did you mean {suggestion!r}?" if suggestion else "")
        return _Problem(loc, text, f"valid fields here: {', '.join(valid)}" if valid else None)
    if kind == "missing":
        hints = {"url": URL_HINT, "instances": "e.g. instances: [{url: http://localhost:11434}]"}
        return _Problem(loc, "required", hints.get(name))
    if kind == "json_invalid":  # the raw text may hold header values: never echo it
        return _Problem(loc, f"invalid JSON: {ctx.get('error', 'cannot parse')}")
    if kind == "frozen_instance":
        return _Problem(loc, "cannot be changed: configuration is immutable", "use model_copy(update=...)")
    limits = {
        "greater_than": ("must be greater than", "gt"),
        "greater_than_equal": ("must be at least", "ge"),
        "less_than": ("must be less than", "lt"),
        "less_than_equal": ("must be at most", "le"),
    }
    if kind in limits:
        words, key = limits[kind]
        return _Problem(loc, f"{words} {ctx.get(key)}", None, value)
    seconds = " of seconds" if _SECONDS_HINT.search(name) else ""
    texts = {
        "int_parsing": ("expected a whole number", None),
        "int_type": ("expected a whole number", None),
        "int_from_float": ("expected a whole number", None),
        "float_parsing": (f"expected a number{seconds}", None),
        "float_type": (f"expected a number{seconds}", None),
        "finite_number": (
            "expected a finite number",
            TIMEOUT_HINT if name in _TIMEOUT_FIELDS else None,
        ),
        "bool_parsing": ("expected true or false", "also accepted: yes/no, on/off, 1/0"),
        "bool_type": ("expected true or false", "also accepted: yes/no, on/off, 1/0"),
        "string_type": ("expected a string", None),
        "list_type": ("expected a list", None),
        "dict_type": ("expected a mapping", None),
        "model_type": ("expected a mapping", None),
        "model_attributes_type": ("expected a mapping", None),
    }
    text, hint = texts.get(
        kind, (str(err.get("msg", "invalid value")).replace("Input should be", "expected"), None)
    )
    return _Problem(loc, text, hint, value)


def _config_error(exc: ValidationError, root: type[BaseModel], origin: _Origin | None = None) -> ConfigError:
    """One ConfigError for all of pydantic's errors, each pointed at its source (field, variable, line)."""
    origin = origin or _Origin()
    file = origin.file and origin.file + (f" (from {origin.via})" if origin.via else "")
    lines: list[str] = []
    first: tuple[str | None, Any, str | None] | None = None
    for err in exc.errors(include_url=False):
        problem = _describe(err, root)
        shown_path = _path((*origin.prefix, *problem.loc))
        set_by = origin.env_var(problem.loc)
        if set_by is not None:
            var, depth = set_by
            where = var
            if len(problem.loc) > depth and isinstance(problem.loc[depth], int):
                where += f" entry {problem.loc[depth] + 1}"  # one item of a list variable
            where += f" ({_path(problem.loc)})"
            field_name: str | None = var
        else:
            where = shown_path or root.__name__
            field_name = shown_path or None
            line = origin.line(problem.loc) if file else None
            if line:
                where = f"line {line}: {where}"
        text = where
        if problem.value is not _MISSING and problem.show_value:
            text += f" = {_show(problem.value, problem.loc)}"
        text += f": {problem.text}"
        if problem.hint:
            text += (" " if problem.text.endswith("?") else "; ") + problem.hint
        lines.append(text)
        if first is None:
            value = problem.value if problem.value is not _MISSING else None
            if _secret(problem.loc):
                value = "***"
            elif isinstance(value, str):
                value = redact_url(value)
            elif not isinstance(value, (int, float, bool, enum.Enum, type(None))):
                value = _show(value)  # a mapping or list may hold header values: keep only a summary
            first = (field_name, value, problem.hint)
    assert first is not None
    if len(lines) == 1:
        message = lines[0]
        if file:
            message = f"{file}{',' if message.startswith('line ') else ':'} {message}"
    else:
        source = file or "the pool configuration"
        message = f"{len(lines)} problems in {source}:\n" + "\n".join(f"  - {line}" for line in lines)
    return ConfigError(message, field=first[0], value=first[1], hint=first[2])
