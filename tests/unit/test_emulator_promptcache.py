"""The emulator's prompt-cache model on its own: tokenizer, template, slot choice, truncation, shifting."""

from __future__ import annotations

import random

import pytest

from gleitzeit_llm.testing.promptcache import (
    PromptCache,
    Vocabulary,
    chat_prompt_tokens,
    common_prefix,
    render_messages,
    shift_tokens,
    slot_policy,
    tokenize,
    truncate_tokens,
)


def words(prefix: str, n: int) -> list[str]:
    return [f" {prefix}{i}" for i in range(n)]


def test_tokens_join_to_the_text_and_split_at_newlines_and_markers() -> None:
    text = "<|im_start|>user\nWhy is the sky  blue?\tIt's light.<|im_end|>\n"
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert tokens[:4] == ["<|im_start|>", "user", "\n", "Why"]
    assert tokens[4:8] == [" is", " the", " sky", "  "]  # a run of spaces stands alone
    assert tokens[8:12] == ["blue", "?", "\t", "It's"]
    assert tokens[-2:] == ["<|im_end|>", "\n"]


def test_the_next_turn_renders_the_previous_prompt_and_reply_as_its_prefix() -> None:
    turn = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"}]
    prompt = tokenize(render_messages(turn))
    reply = "Hello, how can I help?"
    following = [*turn, {"role": "assistant", "content": reply}, {"role": "user", "content": "More."}]
    assert tokenize(render_messages(following))[: len(prompt) + len(tokenize(reply))] == prompt + tokenize(
        reply
    )


def test_chat_truncation_drops_the_oldest_messages_but_keeps_system_and_the_last() -> None:
    messages = [{"role": "system", "content": "rules"}]
    for i in range(10):
        messages += [
            {"role": "user", "content": " ".join(words("q", 10)) + str(i)},
            {"role": "assistant", "content": "ok"},
        ]
    messages.append({"role": "user", "content": "last question"})
    tokens = chat_prompt_tokens(messages, [], num_ctx=60, truncate=True)
    text = "".join(tokens)
    assert len(tokens) <= 60 and text.startswith("<|im_start|>system\nrules")
    assert "last question" in text and "q09" not in text
    assert len(chat_prompt_tokens(messages, [], num_ctx=60, truncate=False)) > 60


def test_common_prefix_agrees_with_a_token_by_token_count() -> None:
    rng = random.Random(7)
    for _ in range(500):
        a = [rng.choice("ab") for _ in range(rng.randrange(12))]
        b = [rng.choice("ab") for _ in range(rng.randrange(12))]
        naive = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        assert common_prefix(a, b) == naive


def test_chat_tokens_equal_the_tokens_of_the_rendered_text() -> None:
    messages = [
        {"role": "system", "content": "rules, rules."},
        {"role": "user", "content": "Hi\n\nthere"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}],
        },
        {"role": "tool", "content": "42"},
    ]
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert chat_prompt_tokens(messages, tools, 10_000, True) == tokenize(render_messages(messages, tools))


def test_runner_truncation_keeps_num_keep_and_the_newest_tokens() -> None:
    tokens = words("t", 10)
    assert truncate_tokens(tokens, 6, 2) == tokens[:2] + tokens[6:]
    assert truncate_tokens(tokens, 20, 2) == tokens


@pytest.mark.parametrize("num_ctx", [2, 5, 16, 17])
def test_context_shifts_never_exceed_num_ctx_and_keep_the_head_and_newest(num_ctx: int) -> None:
    tokens = words("t", 50)
    shifted = shift_tokens(tokens, num_ctx, 4)
    assert len(shifted) <= num_ctx
    assert shifted[-1] == tokens[-1]
    keep = min(4, num_ctx - 1)
    assert shifted[:keep] == tokens[:keep]


def test_longest_policy_takes_the_free_slot_with_the_longest_prefix_and_leaves_one_token() -> None:
    cache = PromptCache(2, 100)
    a = ["<s>", *words("a", 5)]
    slot, cached = cache.take(a)
    assert (slot.id, cached) == (0, 0)
    cache.give_back(slot, [*a, " reply"])
    b = ["<s>", *words("b", 5)]
    slot, cached = cache.take(b)
    assert (slot.id, cached) == (0, 1)  # the shared "<s>" beats the empty slot 1
    cache.give_back(slot, b)
    slot, cached = cache.take(b)
    assert (slot.id, cached) == (0, len(b) - 1)  # fully cached: the last token is evaluated again
    other, cached = cache.take(b)  # slot 0 is busy
    assert (other.id, cached) == (1, 0)


def test_multiuser_policy_takes_the_lru_slot_and_forks_the_prefix() -> None:
    cache = PromptCache(2, 100, "multiuser")
    a, b, c = (["<s>", *words(x, 5)] for x in "abc")
    for prompt in (a, b):
        slot, _ = cache.take(prompt)
        cache.give_back(slot, prompt)
    assert [s.tokens for s in cache.slots] == [a, b]
    slot, cached = cache.take(a[:3] + words("z", 2))  # a prefix of a, not all of it: LRU slot 0
    assert (slot.id, cached) == (0, 3)
    cache.give_back(slot, a)
    slot, cached = cache.take(c)  # slot 1 is now the least recently used
    assert (slot.id, cached) == (1, 1)
    assert slot.tokens == ["<s>"]


def test_similarity_policy_as_llama_server() -> None:
    cache = PromptCache(3, 100, "similarity")
    a, b = ["<s>", *words("a", 9)], ["<s>", *words("b", 9)]
    slot, _ = cache.take(a)
    assert slot.id == 2  # all empty and never used: the last of the least recently released
    cache.give_back(slot, a)
    slot, cached = cache.take(b)  # 1/10 shared is not above 0.1: LRU among slots 0 and 1
    assert (slot.id, cached) == (1, 0)
    cache.give_back(slot, b)
    slot, cached = cache.take([*a, " more"])
    assert (slot.id, cached) == (2, len(a))


def test_policy_follows_the_reported_version() -> None:
    assert slot_policy("0.12.6", False) == "longest"
    assert slot_policy("0.12.6", True) == "multiuser"
    assert slot_policy("0.30.0", True) == "similarity"
    with pytest.raises(ValueError, match="policy"):
        PromptCache(1, 10, "fifo")


def test_resize_adds_slots_and_drops_free_ones_from_the_end() -> None:
    cache = PromptCache(3, 10)
    busy, _ = cache.take(["x"])
    last = cache.slots[2]
    last.in_use = True
    cache.resize(1)
    assert len(cache.slots) == 3  # slot 2 is in use: it goes when given back
    cache.give_back(last, ["y"])
    assert len(cache.slots) == 1 and cache.slots[0] is busy
    cache.resize(2)
    assert [s.id for s in cache.slots] == [0, 1]


def test_vocabulary_round_trips_and_marks_unknown_ids() -> None:
    vocab = Vocabulary()
    tokens = tokenize("hello there, hello")
    ids = vocab.ids(tokens)
    assert vocab.text(ids) == "hello there, hello"
    assert tokens == ["hello", " there", ",", " hello"] and len(set(ids)) == 4
    assert vocab.ids([" there"]) == [ids[1]]
    assert vocab.text([999]) == " t999"
