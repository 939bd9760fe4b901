"""An approximate index of the prompt prefixes each server has in its cache.

Ollama's runner keeps the KV cache of recent prompts per parallel slot and reuses the longest
common prefix, so a conversation's next turn (or another call over the same long RAG context) is
cheap on the server that saw its prefix and expensive everywhere else. We cannot ask a server
what it holds, so the pool remembers what it routed there, as llm-d's approximate prefix scorer
does (routing-science §8.3): the prompt is rendered canonically (chat: role and content of each
message, digests of images and tool calls; generate: system and prompt), cut into fixed-size
blocks, and each block gets a key chained on every block before it, so a hit on block *i* implies
hits on blocks 0..i-1 and the longest match is a scan from the start.

The keys are CRC-32s continued across the blocks (``zlib.crc32(block, previous)`` is the CRC of
the whole prefix so far) with the block position in the high bits: stable across processes (with
``shared_state`` the index is shared: :mod:`gleitzeit_llm.state.redis.prefixes`) and computed
in C. Per (instance, model) the index is an LRU bounded to about what the server can hold,
``max_concurrent x load_balancing.prefix_cache_tokens``.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BLOCK_BYTES", "CHARS_PER_TOKEN", "MAX_BLOCKS", "PrefixIndex", "PromptPrefix", "prompt_prefix"]

BLOCK_BYTES = 64
"""Block size of the chained hashes (llm-d's default block: 64 characters, about 16 tokens)."""
MAX_BLOCKS = 512
"""Blocks hashed per prompt (32 KiB, about 8,000 tokens): a longer prompt is matched on its start."""
CHARS_PER_TOKEN = 4
"""The usual estimate of characters per token, for sizing the index and estimating hit rates."""

# Separators that do not occur in ordinary text, so "ab"+"c" and "a"+"bc" render differently.
_FIELD, _MESSAGE = "\x1f", "\x1e"


@dataclass(frozen=True, slots=True)
class PromptPrefix:
    """A prompt as the prefix index sees it: the chained keys of its blocks and its size."""

    blocks: tuple[int, ...]
    tokens: int
    """The prompt's length in tokens, estimated from its characters."""


def _digest(value: object) -> str:
    return format(zlib.crc32(repr(value).encode()), "08x")


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def render_chat(messages: Iterable[Any]) -> str:
    """The canonical text of a chat prompt: every turn's role and content, digests of the rest.

    The rendering of a conversation is a prefix of the rendering of its next turn, as the
    templated prompt a server caches is.
    """
    parts: list[str] = []
    for message in messages:
        parts.append(_get(message, "role") or "")
        parts.append(_FIELD)
        parts.append(_get(message, "content") or "")
        images = _get(message, "images")
        if images:
            parts.extend(_FIELD + _digest(image) for image in images)
        calls = _get(message, "tool_calls")
        if calls:
            parts.append(_FIELD + _digest(calls))
        parts.append(_MESSAGE)
    return "".join(parts)


def render_generate(system: str | None, prompt: str | None, images: Iterable[Any] | None = None) -> str:
    """The canonical text of a generate prompt: system, image digests, prompt."""
    head = (system or "") + _MESSAGE
    if images:
        head += "".join(_digest(image) + _FIELD for image in images)
    return head + (prompt or "")


def chain(text: str, max_blocks: int = MAX_BLOCKS) -> tuple[int, ...]:
    """The chained keys of the full blocks of ``text`` (UTF-8), at most ``max_blocks``."""
    data = memoryview(text.encode())
    count = min(len(data) // BLOCK_BYTES, max_blocks)
    keys = []
    crc = 0
    crc32 = zlib.crc32
    for index in range(count):
        start = index * BLOCK_BYTES
        crc = crc32(data[start : start + BLOCK_BYTES], crc)
        keys.append(crc | (index << 32))
    return tuple(keys)


def prompt_prefix(kind: str, request: Any) -> PromptPrefix | None:
    """The prefix of a chat or generate request (None for other calls, or no full block)."""
    if kind == "chat":
        text = render_chat(_get(request, "messages") or ())
    elif kind == "generate":
        text = render_generate(_get(request, "system"), _get(request, "prompt"), _get(request, "images"))
    else:
        return None
    blocks = chain(text)
    if not blocks:
        return None
    return PromptPrefix(blocks, max(1, len(text) // CHARS_PER_TOKEN))


def capacity_blocks(max_concurrent: int, cache_tokens: int) -> int:
    """Blocks the index keeps per (instance, model): what ``max_concurrent`` slots of
    ``cache_tokens`` tokens each hold."""
    return max(1, max_concurrent * cache_tokens * CHARS_PER_TOKEN // BLOCK_BYTES)


class PrefixIndex:
    """Per (instance id, model): the block keys of prompts routed there, least recently used out.

    Not thread-safe: the pool calls it under its lock.
    """

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: dict[tuple[str, str | None], OrderedDict[int, None]] = {}

    def record(self, instance_id: str, model: str | None, prefix: PromptPrefix, capacity: int) -> None:
        """Remember that ``prefix`` was sent to the instance, keeping at most ``capacity`` blocks."""
        table = self._tables.get((instance_id, model))
        if table is None:
            table = self._tables[(instance_id, model)] = OrderedDict()
        touch = table.move_to_end
        # The last block first, so the first block is the most recent: eviction takes a
        # prompt's tail before its head, as a server's cache keeps the common prefix.
        for key in reversed(prefix.blocks):
            if key in table:
                touch(key)
            else:
                table[key] = None
        while len(table) > capacity:
            table.popitem(last=False)

    def matched(self, instance_id: str, model: str | None, prefix: PromptPrefix) -> int:
        """How many leading blocks of ``prefix`` the instance is believed to hold."""
        table = self._tables.get((instance_id, model))
        if not table:
            return 0
        count = 0
        for key in prefix.blocks:
            if key not in table:
                break
            count += 1
        return count

    def size(self, instance_id: str, model: str | None) -> int:
        """Blocks held for the instance and model."""
        table = self._tables.get((instance_id, model))
        return len(table) if table else 0

    def forget(self, instance_id: str) -> None:
        """Drop everything known about an instance (removed, or its server restarted empty)."""
        for key in [key for key in self._tables if key[0] == instance_id]:
            del self._tables[key]
