"""The runner's prompt (KV) cache: a tokenizer, a chat template and per-slot caches.

Modelled on Ollama's Go runner as of the version the emulator reports by default (0.12.x,
``runner/ollamarunner/cache.go``; ``runner/llamarunner/cache.go`` is the same logic):

* a loaded model has ``num_parallel`` cache slots, each holding up to ``num_ctx`` tokens;
* a request takes a free slot (``LoadCacheSlot``). By default (``OLLAMA_MULTIUSER_CACHE`` off) that
  is the free slot with the longest common prefix with the prompt, the lowest index on ties
  (``findLongestCacheSlot``; with no shared token at all, the first free slot, full or not). With
  ``multiuser_cache`` (``findBestCacheSlot``) a free slot whose whole content is a prefix of the
  prompt is reused; otherwise the least recently used free slot is taken and the longest
  matching prefix of any slot is copied into it;
* the common prefix is reused; when the whole prompt is cached one token is still evaluated
  ("leave one input to sample");
* the slot then holds the prompt and the generated tokens; when that exceeds ``num_ctx`` the
  runner shifts: it keeps ``num_keep`` tokens and drops the oldest half of the rest
  (``ShiftCacheSlot``/``ShiftDiscard``);
* embeddings take a slot without reusing it (``LoadCacheSlot(inputs, false)``), so the slot then
  holds the embedded text.

From 0.30 Ollama runs llama.cpp's ``llama-server`` instead (``llm/llama_server.go`` starts it with
``-c num_ctx*num_parallel -np num_parallel``), whose ``get_available_slot`` picks the free,
non-empty slot whose common prefix is the largest fraction of the prompt, if above 0.1
(``slot_prompt_similarity``), else the least recently released free slot (the last one on ties):
the ``"similarity"`` policy, used when the emulator reports such a version.

Tokens are strings (special markers, newlines, words with their leading space, punctuation);
nothing here knows about HTTP or time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from typing import Any

from gleitzeit_llm.testing.names import version_tuple

__all__ = [
    "CacheSlot",
    "PromptCache",
    "Vocabulary",
    "chat_prompt_tokens",
    "common_prefix",
    "render_assistant",
    "render_messages",
    "shift_tokens",
    "slot_policy",
    "tokenize",
    "truncate_tokens",
]

#: Ollama's default ``num_keep`` (``api.DefaultOptions``).
DEFAULT_NUM_KEEP = 4
#: llama-server's default ``--slot-prompt-similarity``.
SLOT_PROMPT_SIMILARITY = 0.1
#: Slot choices: the Go runner's ``findLongestCacheSlot`` / ``findBestCacheSlot``, llama-server's.
POLICIES = ("longest", "multiuser", "similarity")


def slot_policy(version: str, multiuser: bool) -> str:
    """The slot choice of an Ollama server reporting ``version``."""
    if version_tuple(version) >= (0, 30, 0):
        return "similarity"
    return "multiuser" if multiuser else "longest"


# Special markers, a newline, a word with at most one leading space, one punctuation character
# with at most one leading space, other whitespace runs. Newlines stand alone, so the text after a
# template's ``assistant\n`` tokenizes the same on its own as inside the next turn's prompt.
_TOKEN = re.compile(r"<\|[a-z_]+\|>|\n|[ ]?[\w']+|[ ]?[^\w\s]|[^\S\n]+")


def tokenize(text: str) -> list[str]:
    """The emulator's tokens of ``text`` (deterministic; joined they give ``text``)."""
    return _TOKEN.findall(text)


# ---------------------------------------------------------------------------------------------
# The chat template (ChatML-like, as Qwen's): role markers around each message, then the
# generation prompt. A conversation's next turn renders the previous turn's prompt, the reply
# and more, so it shares the prefix the runner cached.


def _tool_call_text(call: Any) -> str:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping):
        return json.dumps(call, ensure_ascii=False, sort_keys=True)
    value = {"name": function.get("name"), "arguments": function.get("arguments") or {}}
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def render_assistant(content: str, tool_calls: Sequence[Any] | None = None) -> str:
    """What an assistant message contributes between its role marker and ``<|im_end|>``."""
    text = content
    for call in tool_calls or ():
        text += f"\n<tool_call>\n{_tool_call_text(call)}\n</tool_call>"
    return text


def _blocks(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any]) -> tuple[str, list[str], str]:
    """The tools block ('' without tools), one block per message, and the generation prompt."""
    head = ""
    if tools:
        tools_json = json.dumps(list(tools), ensure_ascii=False)
        head = f"<|im_start|>system\n# Tools\n{tools_json}<|im_end|>\n"
    blocks = []
    for message in messages:
        role = str(message.get("role") or "user")
        content = str(message.get("content") or "")
        if role == "assistant":
            content = render_assistant(content, message.get("tool_calls"))
        blocks.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    return head, blocks, "<|im_start|>assistant\n"


def render_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()) -> str:
    """The rendered prompt of a conversation, ending with the generation prompt.

    Thinking in earlier assistant messages is left out, as reasoning models' templates do.
    """
    head, blocks, tail = _blocks(messages, tools)
    return head + "".join(blocks) + tail


@lru_cache(maxsize=2048)
def _block_tokens(block: str) -> tuple[str, ...]:
    # Blocks end with "<|im_end|>\n", both tokens of their own, so no token spans two blocks and a
    # conversation's history is tokenized once, not again at every turn.
    return tuple(_TOKEN.findall(block))


def chat_prompt_tokens(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Any], num_ctx: int, truncate: bool
) -> list[str]:
    """Tokens of the chat prompt, dropping the oldest messages that do not fit (``chatPrompt``).

    As ``server/prompt.go``: the last message is always kept, and so are the system messages
    before the first kept one; without ``truncate`` nothing is dropped.
    """
    head, blocks, tail = _blocks(messages, tools)
    pieces = [_block_tokens(b) for b in blocks]
    fixed = len(_block_tokens(head)) + len(_block_tokens(tail))
    first = 0
    if truncate and len(messages) > 1 and fixed + sum(map(len, pieces)) > num_ctx:
        first = len(messages) - 1
        for start in range(len(messages) - 2, -1, -1):
            systems = sum(
                len(p) for m, p in zip(messages[:start], pieces, strict=False) if m.get("role") == "system"
            )
            if fixed + systems + sum(map(len, pieces[start:])) > num_ctx:
                break
            first = start
    kept = [p for m, p in zip(messages[:first], pieces, strict=False) if m.get("role") == "system"]
    return [
        *_block_tokens(head),
        *chain.from_iterable(kept),
        *chain.from_iterable(pieces[first:]),
        *_block_tokens(tail),
    ]


def truncate_tokens(tokens: list[str], num_ctx: int, num_keep: int) -> list[str]:
    """The runner's cut of a prompt longer than ``num_ctx``: keep ``num_keep``, drop the oldest rest."""
    if len(tokens) <= num_ctx:
        return tokens
    keep = _keep(num_keep, num_ctx, len(tokens))
    discard = len(tokens) - num_ctx
    return tokens[:keep] + tokens[keep + discard :]


def _keep(num_keep: int, num_ctx: int, length: int) -> int:
    # A negative num_keep keeps the whole prompt; at least one token must stay discardable.
    keep = length if num_keep < 0 else num_keep
    return max(0, min(keep, num_ctx - 1))


def shift_tokens(tokens: list[str], num_ctx: int, num_keep: int) -> list[str]:
    """Cache content after the runner's context shifts (``ShiftCacheSlot``) while it grew to ``tokens``.

    Each shift keeps ``num_keep`` tokens and frees about half of the rest, so the content never
    exceeds ``num_ctx``.
    """
    if len(tokens) <= num_ctx:
        return tokens
    if num_ctx < 2:
        return tokens[len(tokens) - num_ctx :]
    keep = _keep(num_keep, num_ctx, len(tokens))
    result = tokens[:num_ctx]
    for token in tokens[num_ctx:]:
        if len(result) + 1 > num_ctx:
            target_free = max((num_ctx - keep) // 2, 1)
            discard = max(target_free - (num_ctx - len(result)), 0)
            del result[keep : keep + discard]
        result.append(token)
    return result


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """``countCommonPrefix``: how many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    # Bisect with slice comparisons (done in C): a[:low] == b[:low], a[:high] != b[:high].
    low, high = 0, n
    while high - low > 1:
        mid = (low + high) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid
    return low


# ---------------------------------------------------------------------------------------------
# Slots


@dataclass(eq=False)
class CacheSlot:
    """One slot's KV cache: the tokens it holds and when it was last taken."""

    id: int
    tokens: list[str] = field(default_factory=list)
    in_use: bool = False
    #: Counters, not clocks: when the slot was last taken / given back (0: never).
    last_used: int = 0
    last_released: int = 0
    #: Requests served from this slot, and prompt tokens they found cached.
    requests: int = 0
    cached_tokens: int = 0

    def describe(self, preview: int = 80) -> dict[str, Any]:
        text = "".join(self.tokens)
        return {
            "slot": self.id,
            "tokens": len(self.tokens),
            "in_use": self.in_use,
            "last_used": self.last_used,
            "requests": self.requests,
            "cached_tokens": self.cached_tokens,
            "head": text[:preview],
            "tail": text[-preview:] if len(text) > preview else "",
        }


class PromptCache:
    """The cache slots of one loaded model (see the module docstring for the rules).

    Args:
        slots: number of slots (the runner's ``num_parallel``).
        num_ctx: tokens each slot holds.
        policy: how a slot is chosen, one of :data:`POLICIES` (see :func:`slot_policy`).
    """

    def __init__(self, slots: int, num_ctx: int, policy: str = "longest") -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        self.num_ctx = num_ctx
        self.policy = policy
        self.slots = [CacheSlot(i) for i in range(slots)]
        self._capacity = slots
        self._clock = 0

    def resize(self, slots: int) -> None:
        """Grow or shrink to ``slots`` slots (a slot in use goes when it is released)."""
        while len(self.slots) < slots:
            self.slots.append(CacheSlot(len(self.slots)))
        self._capacity = slots
        self._trim()

    def _trim(self) -> None:
        while len(self.slots) > self._capacity and not self.slots[-1].in_use:
            self.slots.pop()

    def clear(self) -> None:
        """Empty every slot and zero its counts (a request in flight refills its slot when done)."""
        for slot in self.slots:
            slot.tokens = []
            slot.requests = slot.cached_tokens = 0

    def take(self, prompt: Sequence[str], reuse: bool = True) -> tuple[CacheSlot, int]:
        """``LoadCacheSlot``: a free slot for ``prompt`` and how many prompt tokens it reuses.

        The slot is marked in use and keeps only the reused prefix (the caller appends the rest).
        """
        prompt = list(prompt)
        self._clock += 1
        if self.policy == "multiuser":
            slot, cached = self._best(prompt)
        elif self.policy == "similarity":
            slot, cached = self._similar(prompt)
        else:
            slot, cached = self._longest(prompt)
        if not reuse:
            cached = 0
        if cached == len(prompt) and cached > 0:
            cached -= 1  # leave one input to sample, so there is a next token
        slot.in_use = True
        slot.last_used = self._clock
        slot.tokens = prompt[:cached]
        slot.requests += 1
        slot.cached_tokens += cached
        return slot, cached

    def give_back(self, slot: CacheSlot, tokens: list[str], num_keep: int = DEFAULT_NUM_KEEP) -> None:
        """Free ``slot`` holding ``tokens`` (prompt plus generated), shifted to fit ``num_ctx``."""
        slot.tokens = shift_tokens(tokens, self.num_ctx, num_keep)
        slot.in_use = False
        self._clock += 1
        slot.last_released = self._clock
        self._trim()

    def _free(self) -> list[CacheSlot]:
        free = [s for s in self.slots[: self._capacity] if not s.in_use]
        if not free:  # more requests than slots cannot happen: the slot semaphore is in front
            raise RuntimeError("no available cache slots")
        return free

    def _longest(self, prompt: Sequence[str]) -> tuple[CacheSlot, int]:
        best, longest = None, -1
        for slot in self._free():
            count = common_prefix(slot.tokens, prompt)
            if count > longest:
                best, longest = slot, count
        assert best is not None
        return best, longest

    def _best(self, prompt: Sequence[str]) -> tuple[CacheSlot, int]:
        free = self._free()
        longest_slot, longest = self.slots[0], -1
        for slot in self.slots:
            count = common_prefix(slot.tokens, prompt)
            if count > longest:
                longest_slot, longest = slot, count
        if longest == len(longest_slot.tokens) and not longest_slot.in_use:
            return longest_slot, longest
        oldest = min(free, key=lambda s: s.last_used)
        if longest > 0 and longest_slot is not oldest:
            oldest.tokens = list(longest_slot.tokens[:longest])  # fork the prefix into the LRU slot
        return oldest, max(longest, 0)

    def _similar(self, prompt: Sequence[str]) -> tuple[CacheSlot, int]:
        free = self._free()
        chosen, best = None, 0.0
        for slot in free:
            if not slot.tokens or not prompt:
                continue
            similarity = common_prefix(slot.tokens, prompt) / len(prompt)
            if similarity > best and similarity > SLOT_PROMPT_SIMILARITY:
                chosen, best = slot, similarity
        if chosen is None:
            oldest = min(s.last_released for s in free)
            chosen = [s for s in free if s.last_released == oldest][-1]
        return chosen, common_prefix(chosen.tokens, prompt)

    def describe(self) -> list[dict[str, Any]]:
        """Every slot as a dict (for tests and the admin API)."""
        return [slot.describe() for slot in self.slots]


class Vocabulary:
    """Token ids for ``/api/generate``'s ``context``: ids are handed out as tokens are first seen.

    A context sent back is turned into text again (``Detokenize``), so a follow-up request with
    ``context`` renders the same tokens the runner cached. Ids this server never handed out become
    one placeholder token each.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._tokens: list[str] = []

    def ids(self, tokens: Iterable[str]) -> list[int]:
        out = []
        for token in tokens:
            index = self._ids.get(token)
            if index is None:
                index = self._ids[token] = len(self._tokens)
                self._tokens.append(token)
            out.append(index)
        return out

    def text(self, ids: Iterable[Any]) -> str:
        tokens = self._tokens
        return "".join(tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else f" t{i}" for i in ids)
