"""Prompt-cache affinity without a network: the prefix index, the bounded-load rule, cache_aware,
the prefix score term and session stickiness."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from gleitzeit_llm import OllamaPoolManager
from gleitzeit_llm.config import InstanceConfig
from gleitzeit_llm.routing.affinity import rendezvous, within_bound
from gleitzeit_llm.routing.breaker import CircuitBreaker
from gleitzeit_llm.routing.instance import InstanceMetrics, OllamaInstance
from gleitzeit_llm.routing.prefix import (
    BLOCK_BYTES,
    PrefixIndex,
    PromptPrefix,
    capacity_blocks,
    chain,
    prompt_prefix,
    render_chat,
)
from gleitzeit_llm.routing.strategies import Router, RouteRequest

NOW = 1000.0
MODEL = "llama3.2:latest"


def instance(id: str, max_concurrent: int = 4) -> OllamaInstance:
    config = InstanceConfig(id=id, url=f"http://127.0.0.1:1/{id}", max_concurrent=max_concurrent)
    return OllamaInstance(config, CircuitBreaker(clock=lambda: NOW))


def chat(*turns: str, context: str = "") -> PromptPrefix:
    messages = [{"role": "system", "content": context}] if context else []
    for n, text in enumerate(turns):
        messages.append({"role": "user" if n % 2 == 0 else "assistant", "content": text})
    prefix = prompt_prefix("chat", {"messages": messages})
    assert prefix is not None
    return prefix


def document(seed: int, chars: int = 4000) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefghij ") for _ in range(chars))


# -- chained hashes ---------------------------------------------------------------------------


def test_the_keys_of_a_prefix_are_the_first_keys_of_the_whole_text() -> None:
    text = document(1)
    whole = chain(text)
    assert len(whole) == len(text) // BLOCK_BYTES
    assert chain(text[: 10 * BLOCK_BYTES + 5]) == whole[:10]  # a partial block has no key


def test_a_change_in_one_block_changes_every_key_after_it() -> None:
    text = document(2)
    changed = text[: 3 * BLOCK_BYTES + 7] + "#" + text[3 * BLOCK_BYTES + 8 :]
    before, after = chain(text), chain(changed)
    assert before[:3] == after[:3]
    assert all(a != b for a, b in zip(before[3:], after[3:], strict=True))


def test_the_same_block_at_another_position_has_another_key() -> None:
    block = "x" * BLOCK_BYTES
    keys = chain(block * 4)
    assert len(set(keys)) == 4


def test_a_conversation_renders_as_a_prefix_of_its_next_turn() -> None:
    first = [{"role": "user", "content": "hello"}]
    second = [*first, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "more"}]
    assert render_chat(second).startswith(render_chat(first))
    with_image = [{"role": "user", "content": "hello", "images": ["aGk="]}]
    assert render_chat(with_image) != render_chat(first)
    with_call = [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]}]
    assert render_chat(with_call) != render_chat([{"role": "assistant", "content": ""}])


def test_generate_renders_system_and_prompt_and_embed_has_no_prefix() -> None:
    long = document(3)
    a = prompt_prefix("generate", {"system": "s1", "prompt": long})
    b = prompt_prefix("generate", {"system": "s2", "prompt": long})
    assert a is not None and b is not None and a.blocks[0] != b.blocks[0]
    assert a.tokens == pytest.approx(len(long) / 4, abs=2)
    assert prompt_prefix("embed", {"input": long}) is None
    assert prompt_prefix("chat", {"messages": [{"role": "user", "content": "hi"}]}) is None  # < 1 block


# -- the index --------------------------------------------------------------------------------


def test_the_index_finds_the_longest_matched_prefix_per_instance_and_model() -> None:
    index = PrefixIndex()
    turn1 = chat("question one", context=document(4))
    turn2 = chat("question one", "answer one " * 20, "question two", context=document(4))
    index.record("a", MODEL, turn1, capacity=10_000)
    assert index.matched("a", MODEL, turn2) == len(turn1.blocks)  # every full block of turn 1
    assert index.matched("a", MODEL, turn1) == len(turn1.blocks)
    assert index.matched("b", MODEL, turn1) == 0
    assert index.matched("a", "other:latest", turn1) == 0
    other = chat("question one", context=document(5))
    assert index.matched("a", MODEL, other) == 0


def test_the_index_is_bounded_and_evicts_a_prompts_tail_before_its_head() -> None:
    index = PrefixIndex()
    old, new = chat("q", context=document(6)), chat("q", context=document(7))
    cap = len(old.blocks) + 10
    index.record("a", MODEL, old, capacity=cap)
    index.record("a", MODEL, new, capacity=cap)
    assert index.size("a", MODEL) == cap
    assert index.matched("a", MODEL, new) == len(new.blocks)
    # Ten blocks of the old prompt survive, and they are its first ten: still a prefix match.
    assert index.matched("a", MODEL, old) == 10
    index.record("a", MODEL, old, capacity=cap)  # used again: most recent again
    assert index.matched("a", MODEL, old) == len(old.blocks)
    index.forget("a")
    assert index.size("a", MODEL) == 0


def test_the_index_bound_is_the_slots_times_the_cached_tokens() -> None:
    assert capacity_blocks(2, 4096) == 2 * 4096 * 4 // BLOCK_BYTES


# -- the bounded-load rule --------------------------------------------------------------------


def test_within_bound_allows_at_most_one_plus_epsilon_times_the_mean() -> None:
    pool = [instance(n, max_concurrent=8) for n in "abcd"]
    for _ in range(3):
        pool[0].acquire(None)
    # 3 in flight + this call over 4 instances: ceil(1.25 * 4 / 4) = 2, so a (3 in flight) is out.
    assert [i.id for i in within_bound(pool, 0.25)] == ["b", "c", "d"]
    assert [i.id for i in within_bound(pool, 10.0)] == ["a", "b", "c", "d"]


def test_under_skew_no_instance_goes_above_its_bounded_share() -> None:
    """Half the calls share one prefix: the owner fills up to the bound, the rest spreads."""
    eps = 0.25
    pool = [instance(n, max_concurrent=8) for n in "abcd"]
    router = Router(random.Random(5))
    router.balance_epsilon = eps
    hot = chat("what is in it?", context=document(8))
    others = [chat("q", context=document(1000 + n, 600)) for n in range(50)]
    rng = random.Random(9)
    running: list[OllamaInstance] = []
    for n in range(2000):
        if running and (rng.random() < 0.45 or len(running) >= 24):
            running.pop(rng.randrange(len(running))).release(MODEL)
        prefix = hot if n % 2 == 0 else others[n % 50]
        req = RouteRequest(model=MODEL, strategy="cache_aware", prefix=prefix)
        loads = [i.in_flight for i in pool]
        chosen = router.select(pool, req, NOW).instance
        assert chosen is not None
        mean_after = (sum(loads) + 1) / len(pool)
        assert chosen.in_flight + 1 <= (1 + eps) * mean_after + 1, (loads, chosen.id)
        chosen.acquire(MODEL)
        router.prefix_index.record(chosen.id, MODEL, prefix, capacity=10_000)
        running.append(chosen)


def test_cache_aware_follows_the_prefix_and_spills_at_the_bound() -> None:
    pool = [instance(n) for n in "abcd"]
    router = Router(random.Random(1))
    conversation = chat("q1", context=document(10))
    router.prefix_index.record("c", MODEL, conversation, capacity=10_000)
    req = RouteRequest(model=MODEL, strategy="cache_aware", prefix=conversation)
    assert router.select(pool, req, NOW).instance.id == "c"  # type: ignore[union-attr]
    pool[2].acquire(MODEL)  # c has 1 of 1 + 1 calls: ceil(1.25 * 2 / 4) = 1, so c is at its bound
    assert router.select(pool, req, NOW).instance.id != "c"  # type: ignore[union-attr]
    for inst in pool:
        if inst.id != "c":
            inst.acquire(MODEL)  # everyone busy alike: c is within the bound again
    assert router.select(pool, req, NOW).instance.id == "c"  # type: ignore[union-attr]


def test_cache_aware_without_a_match_is_least_loaded_or_latency_based() -> None:
    pool = [instance(n) for n in "abc"]
    pool[0].acquire(MODEL)
    pool[1].acquire(MODEL)
    router = Router(random.Random(2))
    fresh = chat("new", context=document(11))
    req = RouteRequest(model=MODEL, strategy="cache_aware", prefix=fresh)
    assert {router.select(pool, req, NOW).instance.id for _ in range(20)} == {"c"}  # type: ignore[union-attr]
    # A short shared system prompt alone (under the match threshold) does not steer it.
    router.prefix_index.record("a", MODEL, chat("other", context=document(11)[:200]), capacity=10_000)
    assert router.select(pool, req, NOW).instance.id == "c"  # type: ignore[union-attr]
    # latency_based as the fallback: the measured fast instance wins over the idle unmeasured one.
    router.prefix_fallback = "latency_based"
    pool[2].acquire(MODEL)
    pool[0].metrics.ttft.observe(0.1, NOW)
    pool[1].metrics.ttft.observe(5.0, NOW)
    pool[2].metrics.ttft.observe(5.0, NOW)
    assert router.select(pool, req, NOW).instance.id == "a"  # type: ignore[union-attr]
    # No prompt to hash (an embed call): the fallback strategy too.
    bare = RouteRequest(model=MODEL, strategy="cache_aware")
    assert router.select(pool, bare, NOW).instance.id == "a"  # type: ignore[union-attr]


def test_a_new_prompt_evicts_the_cache_slot_used_longest_ago() -> None:
    """Without a match, among equally loaded instances, a new conversation goes where the least
    recently used cache slot is oldest: Ollama keeps one prompt per slot, so that is where it
    evicts the conversation least likely to come back. The index size cannot tell this once the
    indexes are full (b's is smaller here only because b's conversations are shorter)."""
    a, b = instance("a", max_concurrent=2), instance("b", max_concurrent=2)
    router = Router(random.Random(6))
    capacity = capacity_blocks(2, 960)  # the index holds about two of these conversations

    def send(prefix: PromptPrefix, now: float, insts: list[OllamaInstance]) -> str:
        req = RouteRequest(model=MODEL, strategy="cache_aware", prefix=prefix)
        chosen = router.select(insts, req, now).instance
        assert chosen is not None
        router.prefix_index.record(chosen.id, MODEL, prefix, capacity)  # as the pool does
        return chosen.id

    long = [chat("q", context=document(20 + n)) for n in range(2)]
    short = [chat("q", context=document(30 + n, 2600)) for n in range(2)]
    send(long[0], 1.0, [a])
    send(long[1], 2.0, [a])  # a's slots: used at 1 and 2; its index is full
    send(short[0], 10.0, [b])
    send(short[1], 11.0, [b])  # b's slots: used at 10 and 11; its index is smaller than a's
    assert router.prefix_index.size("b", MODEL) < router.prefix_index.size("a", MODEL) == capacity
    fresh = [chat("q", context=document(40 + n)) for n in range(2)]
    assert send(fresh[0], 12.0, [a, b]) == "a"  # a's older slot (used at 1) goes
    # The next turn of a's other conversation uses its slot again (a hit on a): now b's slot used
    # at 10 is the oldest, and the next new conversation goes to b.
    assert send(chat("q", "reply", "q2", context=document(21)), 13.0, [a, b]) == "a"
    assert send(fresh[1], 14.0, [a, b]) == "b"


def test_the_prefix_term_steers_another_strategy_only_when_weighted() -> None:
    pool = [instance(n) for n in "abcd"]
    router = Router(random.Random(3))
    conversation = chat("q1", context=document(12))
    router.prefix_index.record("d", MODEL, conversation, capacity=10_000)
    plain = RouteRequest(model=MODEL, strategy="least_loaded")
    assert len({router.select(pool, plain, NOW).instance.id for _ in range(60)}) == 4  # type: ignore[union-attr]
    router.prefix_weight = 1.0
    term = RouteRequest(model=MODEL, strategy="least_loaded", prefix=conversation)
    assert {router.select(pool, term, NOW).instance.id for _ in range(20)} == {"d"}  # type: ignore[union-attr]


# -- sessions ---------------------------------------------------------------------------------


def test_a_session_sticks_to_one_instance_and_sessions_spread() -> None:
    pool = [instance(n) for n in "abcd"]
    router = Router(random.Random(4))
    for session in ("s1", "s2", "s3"):
        req = RouteRequest(model=MODEL, strategy="round_robin", session=session)
        assert len({router.select(pool, req, NOW).instance.id for _ in range(10)}) == 1  # type: ignore[union-attr]
    homes = Counter(
        max(pool, key=lambda i, s=f"user-{n}": rendezvous(s, i.id)).id  # type: ignore[misc]
        for n in range(4000)
    )
    assert all(800 < count < 1200 for count in homes.values()), homes


def test_a_session_spills_to_its_own_second_choice_under_load() -> None:
    pool = [instance(n) for n in "abcd"]
    router = Router(random.Random(5))
    order = sorted(pool, key=lambda i: rendezvous("chat-1", i.id), reverse=True)
    req = RouteRequest(model=MODEL, session="chat-1")
    assert router.select(pool, req, NOW).instance is order[0]
    order[0].acquire(MODEL)
    order[0].acquire(MODEL)  # 2 in flight, mean after ~0.75: over the bound
    assert {router.select(pool, req, NOW).instance.id for _ in range(10)} == {order[1].id}  # type: ignore[union-attr]


# -- the pool's side: hashing only when needed, hit rates -------------------------------------


def test_only_cache_aware_or_a_prefix_weight_asks_for_the_prompt() -> None:
    plain = OllamaPoolManager(["http://127.0.0.1:1"], health_checks=False)
    assert not any(plain.wants_prefix(s) for s in ("least_loaded", "latency_based", "round_robin"))
    assert plain.wants_prefix("cache_aware")
    weighted = OllamaPoolManager(
        ["http://127.0.0.1:1"], load_balancing={"prefix_weight": 0.5}, health_checks=False
    )
    assert weighted.wants_prefix("least_loaded") and weighted.wants_prefix("latency_based")
    assert not weighted.wants_prefix("round_robin") and not weighted.wants_prefix("weighted")


def test_a_session_hint_is_validated_by_the_manager_too() -> None:
    pool = OllamaPoolManager(["http://127.0.0.1:1"], health_checks=False)
    assert pool.route_request("llama3.2", session_id="c1").session == "c1"
    with pytest.raises(Exception, match="session_id must be a non-empty string") as info:
        pool.route_request("llama3.2", session_id="")
    assert info.value.field == "session_id"  # type: ignore[attr-defined]


def test_the_hit_rate_comes_from_the_cached_count_the_estimate_or_the_prompt_time() -> None:
    m = InstanceMetrics()
    assert m.prompt_cache_hit_rate is None
    m.observe_prompt_cache(1000, 900, None)  # prompt_eval_cached_count: 900 of 1000
    assert m.prompt_cache_hit_rate == pytest.approx(0.9)
    old = InstanceMetrics()  # a server that counts only what it evaluated
    old.observe_prompt_cache(100, None, 1000)
    assert old.prompt_cache_hit_rate == pytest.approx(0.9)
    timed = InstanceMetrics()  # Ollama: the whole prompt counted, the cache shows in the time
    timed.observe_prompt_cache(3000, None, 3000, 3.0)  # a miss: 1,000 tokens/s
    assert timed.prompt_cache_hit_rate == pytest.approx(0.0)
    timed.observe_prompt_cache(3100, None, 3100, 0.1)  # 100 tokens evaluated, 3,000 cached
    assert timed.prompt_cache_hit_rate == pytest.approx(3000 / (3000 * 0.95 + 3100))
    assert math.isclose(timed.prompt_tokens_seen, 3000 * 0.95 + 3100)
