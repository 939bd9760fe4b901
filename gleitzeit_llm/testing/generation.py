"""What the emulated model "says": reply text, JSON values for a schema, and embeddings.

Everything here is deterministic: the same request gives the same reply, so tests can compare
runs and instances. Nothing here knows about HTTP or time.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "GenerationRequest",
    "Reply",
    "Responder",
    "count_tokens",
    "default_reply",
    "embed_text",
    "split_tokens",
    "value_for_schema",
]


@dataclass(frozen=True)
class GenerationRequest:
    """What a responder sees of a chat or generate request."""

    #: ``"chat"`` or ``"generate"``.
    endpoint: str
    #: The model name as the client sent it.
    model: str
    #: Chat messages; for ``/api/generate`` a system and a user message made from the request.
    messages: tuple[Mapping[str, Any], ...]
    #: The last user message (chat) or the prompt (generate).
    prompt: str
    options: Mapping[str, Any] = field(default_factory=dict)
    format: Any = None
    think: bool | str | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    #: The whole decoded request body.
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A scripted answer: content and, for thinking requests, the thinking text."""

    content: str
    thinking: str | None = None


#: ``responder(request) -> str | Reply | None``; ``None`` falls back to the built-in text.
Responder = Callable[[GenerationRequest], "str | Reply | None"]


def _seed(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


_WORDS = (
    "the",
    "sky",
    "light",
    "blue",
    "sun",
    "air",
    "waves",
    "scatter",
    "short",
    "long",
    "red",
    "green",
    "ocean",
    "cloud",
    "model",
    "answer",
    "question",
    "simple",
    "because",
    "energy",
    "colour",
    "small",
    "large",
    "quickly",
    "slowly",
    "river",
    "mountain",
    "city",
    "morning",
    "evening",
    "signal",
    "value",
    "number",
    "system",
    "data",
    "pattern",
    "clear",
    "bright",
    "soft",
    "warm",
    "cold",
    "layer",
    "particle",
    "photon",
    "spectrum",
    "eye",
    "human",
    "reason",
    "result",
    "example",
    "detail",
    "moment",
    "world",
)


def default_reply(seed_text: str, tokens: int) -> str:
    """A deterministic sentence of about ``tokens`` tokens (one word each), ending with a period."""
    if tokens <= 0:
        return ""
    rng = random.Random(_seed("reply", seed_text))
    words = [rng.choice(_WORDS) for _ in range(tokens)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def default_thinking(seed_text: str, tokens: int = 8) -> str:
    """Deterministic thinking text that reads like a model planning its answer."""
    rng = random.Random(_seed("think", seed_text))
    topic = " ".join(rng.choice(_WORDS) for _ in range(max(1, tokens - 6)))
    return f"Okay, the user asks about {topic}. Let me answer."


# Words with their leading space, punctuation on its own, like a BPE tokenizer's pieces.
_TOKEN = re.compile(r"\s*[\w']+|\s*[^\w\s]|\s+")


def split_tokens(text: str) -> list[str]:
    """Split text into the pieces that are streamed one per chunk (joined they give ``text``)."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """Roughly four characters per token, at least one for non-empty text."""
    return (len(text) + 3) // 4 if text else 0


# ---------------------------------------------------------------------------------------------
# JSON values for ``format``


class _SchemaValues:
    """Build one JSON value valid for a JSON schema (the subset pydantic and the frameworks emit)."""

    def __init__(self, root: Mapping[str, Any], seed_text: str) -> None:
        self.root = root
        self.rng = random.Random(_seed("schema", seed_text))

    def resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for part in ref.lstrip("#").split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return node if isinstance(node, Mapping) else {}

    def words(self, hint: str, count: int = 2) -> str:
        picked = [self.rng.choice(_WORDS) for _ in range(count)]
        return " ".join(picked) if not hint else f"{hint.replace('_', ' ')} {' '.join(picked)}"

    def value(self, schema: Any, name: str = "", depth: int = 0) -> Any:
        if schema is True or not isinstance(schema, Mapping):
            return self.words(name)
        if depth > 12:  # recursive schemas: stop with the simplest valid value
            return None if self._allows(schema, "null") else self._minimal(schema)
        if "$ref" in schema:
            target = dict(self.resolve(schema["$ref"]))
            target.update({k: v for k, v in schema.items() if k != "$ref"})
            return self.value(target, name, depth + 1)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        if "default" in schema:
            return schema["default"]
        if isinstance(schema.get("allOf"), list):
            return self.value(self._merge(schema), name, depth + 1)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self.value(self._choose(options), name, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or ["null"]
            kind = kinds[0]
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        return getattr(self, f"_{kind}", self._string)(schema, name, depth)

    def _allows(self, schema: Mapping[str, Any], kind: str) -> bool:
        value = schema.get("type")
        return value == kind or (isinstance(value, list) and kind in value)

    def _minimal(self, schema: Mapping[str, Any]) -> Any:
        kind = schema.get("type")
        return {"object": {}, "array": [], "integer": 0, "number": 0, "boolean": False}.get(str(kind), "")

    def _merge(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, Mapping) and "$ref" in part:
                part = self.resolve(part["$ref"])
            if not isinstance(part, Mapping):
                continue
            for key, value in part.items():
                if key == "properties":
                    merged.setdefault("properties", {}).update(value)
                elif key == "required":
                    merged["required"] = sorted(set(merged.get("required", [])) | set(value))
                else:
                    merged.setdefault(key, value)
        return merged

    def _choose(self, options: Sequence[Any]) -> Any:
        # Optional[X] is anyOf [X, null]: answer with X, the informative branch.
        for option in options:
            if not (isinstance(option, Mapping) and option.get("type") == "null"):
                return option
        return options[0]

    def _object(self, schema: Mapping[str, Any], name: str, depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        result = {key: self.value(sub, key, depth + 1) for key, sub in properties.items()}
        if not properties and schema.get("additionalProperties") not in (False, None):
            extra = schema["additionalProperties"]
            result[self.rng.choice(_WORDS)] = self.value(extra, "", depth + 1)
        if not properties and "additionalProperties" not in schema and depth == 0:
            result = {"response": self.words("", 6)}
        return result

    def _array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft-04 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        count = max(low, len(prefix or []), 2)
        if high is not None:
            count = min(count, int(high))
        values: list[Any] = []
        for index in range(count):
            sub = prefix[index] if prefix and index < len(prefix) else items
            value = self.value(sub, name.rstrip("s") if name else "", depth + 1)
            if schema.get("uniqueItems") and value in values:
                value = self._vary(value, index)
            values.append(value)
        return values

    def _vary(self, value: Any, index: int) -> Any:
        if isinstance(value, str):
            return f"{value} {index}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value + index
        return value

    def _string(self, schema: Mapping[str, Any], name: str, depth: int) -> str:
        fmt = schema.get("format")
        text = {
            "date-time": "2025-01-01T12:00:00Z",
            "date": "2025-01-01",
            "time": "12:00:00Z",
            "duration": "PT1H",
            "email": "user@example.com",
            "idn-email": "user@example.com",
            "uri": "https://example.com/resource",
            "url": "https://example.com/resource",
            "iri": "https://example.com/resource",
            "uri-reference": "/resource",
            "uuid": "123e4567-e89b-42d3-a456-426614174000",
            "ipv4": "192.0.2.1",
            "ipv6": "2001:db8::1",
            "hostname": "example.com",
        }.get(str(fmt)) or self.words(name)
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        if len(text) < low:
            text = (text + " ") * (low // max(1, len(text)) + 1)
            text = text[: max(low, len(text.rstrip()))]
        if high is not None and len(text) > int(high):
            text = text[: int(high)]
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            text = _matching(pattern, text)
        return text

    def _bounds(self, schema: Mapping[str, Any], step: float) -> tuple[float, float]:
        low = schema.get("minimum", -math.inf)
        high = schema.get("maximum", math.inf)
        if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
            low = max(low, schema["exclusiveMinimum"] + step)
        if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
            high = min(high, schema["exclusiveMaximum"] - step)
        return low, high

    def _integer(self, schema: Mapping[str, Any], name: str, depth: int) -> int:
        low, high = self._bounds(schema, 1)
        value = self.rng.randint(1, 100)
        if low > -math.inf:
            value = max(value, math.ceil(low))
        if high < math.inf:
            value = min(value, math.floor(high))
        multiple = schema.get("multipleOf")
        if isinstance(multiple, int) and multiple > 0:
            value = math.ceil(value / multiple) * multiple
            if value > high:
                value -= multiple
        return int(value)

    def _number(self, schema: Mapping[str, Any], name: str, depth: int) -> float:
        low, high = self._bounds(schema, 1e-6)
        base = round(self.rng.uniform(1, 100), 2)
        if high >= low:
            base = min(max(base, low), high)
        multiple = schema.get("multipleOf")
        if isinstance(multiple, (int, float)) and multiple > 0:
            base = math.ceil(base / multiple) * multiple
        return base

    def _boolean(self, schema: Mapping[str, Any], name: str, depth: int) -> bool:
        return True

    def _null(self, schema: Mapping[str, Any], name: str, depth: int) -> None:
        return None


_PATTERN_CANDIDATES = (
    "12345",
    "abc",
    "ABC",
    "Abc",
    "abc123",
    "a",
    "1",
    "2025-01-01",
    "12:00",
    "user@example.com",
    "https://example.com",
    "+1-555-0100",
    "AB-123",
)


def _matching(pattern: str, text: str) -> str:
    """A string for ``pattern``: ``text`` if it matches, else the first simple candidate that does."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return text
    for candidate in (text, *_PATTERN_CANDIDATES):
        if compiled.search(candidate):
            return candidate
    return text


def value_for_schema(schema: Any, seed_text: str = "") -> Any:
    """A JSON value valid for ``schema`` (``"json"`` or a non-schema gives a small object).

    Supports object/properties/required, nested objects, arrays (items, prefixItems,
    minItems/maxItems, uniqueItems), string (enum, const, format, min/maxLength), integer and
    number (minimum/maximum, exclusive bounds, multipleOf), boolean, null, anyOf/oneOf/allOf,
    ``$ref`` into ``$defs``/``definitions`` and ``default``. ``pattern`` is met only when one of a
    few simple strings (digits, letters, a date, an e-mail, ...) matches it.
    """
    if not isinstance(schema, Mapping):
        rng = random.Random(_seed("json", seed_text))
        return {"response": default_reply(seed_text, 6), "confidence": round(rng.uniform(0.5, 1.0), 2)}
    return _SchemaValues(schema, seed_text).value(schema)


def format_text(schema: Any, seed_text: str) -> str:
    """The text a model constrained by ``format`` writes (``json.dumps`` spacing, like most models)."""
    return json.dumps(value_for_schema(schema, seed_text), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Embeddings


_WORD = re.compile(r"\w+")


@lru_cache(maxsize=4096)
def embed_text(text: str, dim: int) -> tuple[float, ...]:
    """A deterministic, L2-normalised embedding of ``text``.

    Feature hashing of the lower-cased words plus a little text-seeded noise: texts that share
    words have a higher cosine similarity, so retrieval demos rank sensibly.
    """
    vector = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=16).digest()
        for offset in range(0, 16, 4):
            bucket = int.from_bytes(digest[offset : offset + 4], "big")
            vector[bucket % dim] += 1.0 if bucket & 0x80000000 else -1.0
    noise = random.Random(_seed("embed", text))
    scale = 0.05 if any(vector) else 1.0
    vector = [v + scale * (noise.random() - 0.5) for v in vector]
    return tuple(normalize(vector))


def normalize(vector: Sequence[float]) -> list[float]:
    """Scale to unit L2 norm (a zero vector stays zero)."""
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else list(vector)
