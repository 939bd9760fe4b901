"""Byte-level details of Ollama's wire format that Go produces and Python does not by default.

Ollama is a Go server (gin + ``encoding/json``), so its bytes carry Go's habits: compact JSON
with ``<``, ``>`` and ``&`` escaped, RFC 3339 timestamps with nanoseconds and trailing zeros
trimmed, ``time.ParseDuration`` for ``keep_alive`` strings, and decoder error texts that clients
see verbatim in 400 bodies. This module reproduces those habits in one place.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import time
from typing import Any

__all__ = [
    "FOREVER",
    "ApiError",
    "decode_json_body",
    "dumps",
    "format_local",
    "format_utc",
    "go_quote",
    "parse_go_duration",
    "parse_keep_alive",
]

#: ``keep_alive`` < 0 means "keep forever"; Go stores it as ``math.MaxInt64`` nanoseconds.
FOREVER = math.inf
_MAX_INT64_NS = 2**63 - 1


class ApiError(Exception):
    """An error answer: ``{"error": message}`` with an HTTP status."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


# ---------------------------------------------------------------------------------------------
# JSON encoding


_HTML_UNSAFE = re.compile("[<>&\u2028\u2029]")
_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    """Encode like Go's ``json.Marshal``: compact, UTF-8, HTML characters escaped."""
    text = _encoder.encode(value)
    # Go escapes these even inside strings; they cannot occur outside strings in valid JSON.
    if _HTML_UNSAFE.search(text):
        text = _HTML_UNSAFE.sub(lambda m: _HTML_ESCAPES[m.group(0)], text)
    return text


# ---------------------------------------------------------------------------------------------
# Timestamps


_utc_cache: tuple[int, str] = (-1, "")


def _fraction(ns: int) -> str:
    return ("." + f"{ns:09d}".rstrip("0")) if ns else ""


def format_utc(ns: int | None = None) -> str:
    """``time.Now().UTC()`` as Go marshals it, e.g. ``2025-10-26T17:21:21.196249Z``."""
    global _utc_cache
    if ns is None:
        ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    cached_sec, cached = _utc_cache
    if cached_sec != sec:
        # One strftime per second: created_at is formatted for every streamed chunk.
        cached = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _utc_cache = (sec, cached)
    return cached + _fraction(frac) + "Z"


def format_local(ns: int) -> str:
    """A local-time timestamp with offset (``modified_at``, ``expires_at``), Go style."""
    sec, frac = divmod(ns, 1_000_000_000)
    try:
        moment = _dt.datetime.fromtimestamp(sec).astimezone()
    except (OverflowError, OSError, ValueError):
        moment = _dt.datetime(9999, 12, 31, 23, 59, 59).astimezone()
    offset = moment.utcoffset() or _dt.timedelta(0)
    if offset:
        minutes = int(offset.total_seconds()) // 60
        sign = "+" if minutes >= 0 else "-"
        minutes = abs(minutes)
        zone = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    else:
        zone = "Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(frac) + zone


def forever_ns(now_ns: int) -> int:
    """The ``expires_at`` Go reports for ``keep_alive < 0``: now + MaxInt64 ns (~292 years)."""
    return now_ns + _MAX_INT64_NS


# ---------------------------------------------------------------------------------------------
# Durations (keep_alive)


def go_quote(text: str) -> str:
    """``strconv.Quote`` for the strings that appear in Go error messages."""
    return json.dumps(text, ensure_ascii=False)


_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_NUMBER = re.compile(r"[0-9]*(?:\.[0-9]*)?")
_UNIT = re.compile(r"[^0-9.]*")


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration``, returning seconds; raises ``ValueError`` with Go's message."""
    original = text
    negative = False
    if text[:1] in ("-", "+"):
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f"time: invalid duration {go_quote(original)}")
    total = 0.0
    while text:
        number = _NUMBER.match(text)
        digits = number.group(0) if number else ""
        if digits in ("", "."):
            raise ValueError(f"time: invalid duration {go_quote(original)}")
        text = text[len(digits) :]
        unit_match = _UNIT.match(text)
        unit = unit_match.group(0) if unit_match else ""
        if not unit:
            raise ValueError(f"time: missing unit in duration {go_quote(original)}")
        if unit not in _UNITS:
            raise ValueError(f"time: unknown unit {go_quote(unit)} in duration {go_quote(original)}")
        total += float(digits) * _UNITS[unit]
        text = text[len(unit) :]
    return -total if negative else total


def _go_type_name(value: Any) -> str:
    # reflect.TypeOf(v) for what encoding/json decodes into an interface{}.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    return "%!s(<nil>)"


def parse_keep_alive(value: Any) -> float | None:
    """``keep_alive`` as Ollama's ``api.Duration`` reads it: seconds, :data:`FOREVER`, or ``None``.

    Numbers are seconds; strings are Go durations (``"5m"``, ``"1h30m"``); a plain numeric string
    such as ``"-1"`` or ``"300"`` is taken as seconds, as the reference documents. Negative means
    forever. Any other JSON type is a 400 ``Unsupported type: '...'``.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return FOREVER if value < 0 else float(value)
    if isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parse_go_duration(value)
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
        if math.isnan(seconds):
            raise ApiError(400, f"time: invalid duration {go_quote(value)}")
        return FOREVER if seconds < 0 else seconds
    raise ApiError(400, f"Unsupported type: '{_go_type_name(value)}'")


# ---------------------------------------------------------------------------------------------
# Request bodies


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError("Expecting value", name, 0)


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_WHITESPACE = " \t\r\n"


def _char(text: str, pos: int) -> str:
    ch = text[pos] if 0 <= pos < len(text) else ""
    return "'\\''" if ch == "'" else f"'{ch}'"


def _go_decode_message(text: str, exc: json.JSONDecodeError) -> str:
    """Translate a Python decode error into the text Go's ``encoding/json`` would give."""
    pos = exc.pos
    if exc.doc != text:  # raised by _reject_constant (NaN, Infinity): point at the token start
        pos = max(0, text.find(exc.doc))
    rest = text[pos:].lstrip(_WHITESPACE)
    if not rest or exc.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    pos = len(text) - len(rest)
    ch = _char(text, pos)
    if exc.msg.startswith("Expecting value"):
        return f"invalid character {ch} looking for beginning of value"
    if exc.msg.startswith("Expecting property name"):
        return f"invalid character {ch} looking for beginning of object key string"
    if exc.msg.startswith("Expecting ':'"):
        return f"invalid character {ch} after object key"
    if exc.msg.startswith("Expecting ','"):
        before = text[:pos].rstrip(_WHITESPACE)
        depth_obj = before.count("{") - before.count("}")
        depth_arr = before.count("[") - before.count("]")
        where = "array element" if depth_arr > 0 and depth_obj <= 0 else "object key:value pair"
        return f"invalid character {ch} after {where}"
    if exc.msg.startswith("Invalid control character"):
        return f"invalid character {ch} in string literal"
    return f"invalid character {ch} looking for beginning of value"


def decode_json_body(body: bytes) -> Any:
    """Decode a request body the way gin's ``ShouldBindJSON`` does.

    Empty body: 400 ``missing request body``; malformed: 400 with Go's decoder text. Like Go's
    ``json.Decoder``, only the first JSON value is read and trailing bytes are ignored.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", errors="replace")
    stripped = text.lstrip(_WHITESPACE)
    if not stripped:
        raise ApiError(400, "missing request body")
    try:
        value, _end = _decoder.raw_decode(stripped)
    except json.JSONDecodeError as exc:
        raise ApiError(400, _go_decode_message(stripped, exc)) from None
    return value


_JSON_KIND = {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}


def json_kind(value: Any) -> str:
    """The JSON type name Go uses in ``cannot unmarshal <kind> into ...`` messages."""
    return _JSON_KIND.get(type(value), "value")


def check_fields(body: Any, struct: str, fields: dict[str, tuple[tuple[type, ...], str]]) -> None:
    """Reject wrongly typed fields with Go's ``json: cannot unmarshal`` message (400)."""
    if not isinstance(body, dict):
        raise ApiError(400, f"json: cannot unmarshal {json_kind(body)} into Go value of type api.{struct}")
    for name, (types, go_type) in fields.items():
        value = body.get(name)
        if value is None:  # JSON null leaves a Go field at its zero value
            continue
        kind = json_kind(value)
        if isinstance(value, bool):
            ok = bool in types
        elif isinstance(value, float) and int in types and float not in types:
            ok = value.is_integer()
            kind = f"number {value!r}"
        else:
            ok = isinstance(value, types)
        if not ok:
            raise ApiError(
                400, f"json: cannot unmarshal {kind} into Go struct field {struct}.{name} of type {go_type}"
            )
