"""The emulator's prompt cache: per-slot KV caches with longest-common-prefix reuse, as Ollama's runner.

Durations are modelled, so ``prompt_eval_duration`` is exact: ``ttft + uncached / prompt_tps``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gleitzeit_llm.testing import OllamaEmulator
from gleitzeit_llm.testing.promptcache import render_assistant, tokenize

MODEL = "llama3.2"
TTFT = 0.02
PROMPT_TPS = 1000.0


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def emulator(**settings: Any) -> OllamaEmulator:
    options: dict[str, Any] = {
        "models": [MODEL, "nomic-embed-text"],
        "loaded": [MODEL],
        "time_scale": 0,
        "ttft": TTFT,
        "prompt_tokens_per_second": PROMPT_TPS,
        **settings,
    }
    return OllamaEmulator(**options)


def conversation(topic: str, words: int = 60) -> list[dict[str, Any]]:
    context = " ".join(f"{topic}{i}" for i in range(words))
    return [
        {"role": "system", "content": f"Answer from this context: {context}"},
        {"role": "user", "content": f"What about {topic}?"},
    ]


def ask(
    client: httpx.Client, emu: OllamaEmulator, messages: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    response = client.post(
        f"{emu.url}/api/chat", json={"model": MODEL, "messages": messages, "stream": False, **extra}
    )
    assert response.status_code == 200, response.text
    return response.json()


def uncached_seconds(body: dict[str, Any]) -> float:
    """Prompt tokens the server evaluated, from what it reported (Ollama's own fields)."""
    return body["prompt_eval_duration"] / 1e9 - TTFT


def last_record(emu: OllamaEmulator) -> Any:
    return emu.requests_for("/api/chat")[-1]


def test_the_next_turn_evaluates_only_the_new_tokens(client: httpx.Client) -> None:
    with emulator() as emu:
        messages = conversation("alpha")
        first = ask(client, emu, messages)
        assert last_record(emu).cached_tokens == 0
        assert uncached_seconds(first) * PROMPT_TPS == pytest.approx(first["prompt_eval_count"])

        messages += [first["message"], {"role": "user", "content": "And why is that so?"}]
        second = ask(client, emu, messages)
        record = last_record(emu)
        # The slot held the first prompt and the reply; the next turn starts with exactly those.
        assert record.cached_tokens == first["prompt_eval_count"] + first["eval_count"]
        assert record.cache_slot == 0
        # Ollama counts the whole prompt; only the duration shows what the cache saved.
        assert second["prompt_eval_count"] > first["prompt_eval_count"]
        new_tokens = second["prompt_eval_count"] - record.cached_tokens
        assert 0 < new_tokens < 20
        assert uncached_seconds(second) * PROMPT_TPS == pytest.approx(new_tokens)


def test_a_fully_cached_prompt_still_evaluates_one_token(client: httpx.Client) -> None:
    with emulator() as emu:
        messages = conversation("beta")
        first = ask(client, emu, messages)
        again = ask(client, emu, messages)
        assert again["prompt_eval_count"] == first["prompt_eval_count"]
        assert last_record(emu).cached_tokens == again["prompt_eval_count"] - 1
        assert uncached_seconds(again) * PROMPT_TPS == pytest.approx(1)


def test_without_the_prompt_cache_every_prompt_is_evaluated_in_full(client: httpx.Client) -> None:
    with emulator(prompt_cache=False) as emu:
        messages = conversation("gamma")
        ask(client, emu, messages)
        again = ask(client, emu, messages)
        assert last_record(emu).cached_tokens == 0
        assert uncached_seconds(again) * PROMPT_TPS == pytest.approx(again["prompt_eval_count"])


def test_single_user_cache_gives_a_new_conversation_the_slot_with_the_longest_prefix(
    client: httpx.Client,
) -> None:
    # Ollama's default (findLongestCacheSlot): the template's shared first tokens make slot 0 the
    # longest match, so sequential conversations overwrite each other there; slot 1 stays empty.
    with emulator(num_parallel=2) as emu:
        a, b = conversation("alpha"), conversation("beta")
        ask(client, emu, a)
        ask(client, emu, b)
        assert last_record(emu).cache_slot == 0
        assert 0 < last_record(emu).cached_tokens < 10  # the template's head, nothing of alpha
        ask(client, emu, a)
        assert last_record(emu).cached_tokens < 10
        slots = emu.prompt_caches(MODEL)["llama3.2:latest"]
        assert [s["tokens"] > 0 for s in slots] == [True, False]


def test_multiuser_cache_keeps_two_conversations_and_a_third_evicts_the_least_recently_used(
    client: httpx.Client,
) -> None:
    with emulator(num_parallel=2, multiuser_cache=True) as emu:
        a, b, c = conversation("alpha"), conversation("beta"), conversation("gamma")
        ask(client, emu, a)
        ask(client, emu, b)
        assert [r.cache_slot for r in emu.requests_for("/api/chat")] == [0, 1]
        full_a = ask(client, emu, a)
        assert last_record(emu).cached_tokens == full_a["prompt_eval_count"] - 1
        full_b = ask(client, emu, b)
        assert last_record(emu).cached_tokens == full_b["prompt_eval_count"] - 1
        # Slot 0 (alpha) is now the least recently used: gamma takes it, with the shared template
        # head forked from the best-matching slot.
        ask(client, emu, c)
        assert last_record(emu).cache_slot == 0 and last_record(emu).cached_tokens < 10
        ask(client, emu, b)
        assert (last_record(emu).cache_slot, last_record(emu).cached_tokens) == (
            1,
            full_b["prompt_eval_count"] - 1,
        )
        ask(client, emu, a)
        assert last_record(emu).cached_tokens < 10  # alpha's cache is gone


def test_from_0_30_llama_server_keeps_similar_prompts_apart_and_evicts_the_lru(client: httpx.Client) -> None:
    with emulator(num_parallel=2, version="0.30.0") as emu:
        a, b, c = conversation("alpha"), conversation("beta"), conversation("gamma")
        for messages in (a, b, a, b):
            ask(client, emu, messages)
        records = emu.requests_for("/api/chat")
        assert [r.cache_slot for r in records] == [1, 0, 1, 0]  # never-used slots: the last first
        assert all(r.cached_tokens == r.prompt_eval_count - 1 for r in records[2:])
        ask(client, emu, c)  # similar to neither (the template head is under 10%): the LRU slot, alpha's
        assert last_record(emu).cache_slot == 1
        full = ask(client, emu, b)
        assert last_record(emu).cached_tokens == full["prompt_eval_count"] - 1


async def test_concurrent_conversations_keep_their_own_slots() -> None:
    # Under concurrency single-user mode spreads too: a busy slot is never chosen.
    with emulator(num_parallel=2, time_scale=0.001) as emu:
        emu.set_faults(hang_after_chunks=1)
        async with httpx.AsyncClient(base_url=emu.url, timeout=10) as client:
            calls = [
                asyncio.ensure_future(
                    client.post("/api/chat", json={"model": MODEL, "messages": conversation(t)})
                )
                for t in ("alpha", "beta")
            ]
            await emu.wait_for_async(lambda: emu.generating(MODEL) == 2)
            emu.clear_faults()
            await asyncio.gather(*calls)
            assert sorted(r.cache_slot for r in emu.requests_for("/api/chat")) == [0, 1]
            slot_of = {r.body["messages"][1]["content"]: r.cache_slot for r in emu.requests_for("/api/chat")}
            for topic in ("alpha", "beta"):
                response = await client.post(
                    "/api/chat", json={"model": MODEL, "messages": conversation(topic), "stream": False}
                )
                record = emu.requests_for("/api/chat")[-1]
                assert record.cache_slot == slot_of[f"What about {topic}?"]
                assert record.cached_tokens == response.json()["prompt_eval_count"] - 1


def test_the_cache_and_the_prompt_stay_within_num_ctx(client: httpx.Client) -> None:
    with emulator(loaded=[]) as emu:  # num_ctx applies when the model loads
        messages = conversation("delta", words=20)
        options = {"num_ctx": 120}
        for turn in range(6):
            body = ask(client, emu, messages, options=options)
            assert body["prompt_eval_count"] <= 120
            messages += [body["message"], {"role": "user", "content": f"Tell me more, part {turn}."}]
        # Old turns were dropped from the prompt (the system message stays), as chatPrompt does.
        assert body["prompt_eval_count"] < sum(len(m["content"].split()) for m in messages)
        for slot in emu.prompt_caches(MODEL)["llama3.2:latest"]:
            assert slot["tokens"] <= 120
        assert last_record(emu).body["messages"][0]["role"] == "system"


def test_a_prompt_over_num_ctx_without_truncate_is_refused(client: httpx.Client) -> None:
    with emulator(loaded=[]) as emu:
        response = client.post(
            f"{emu.url}/api/generate",
            json={
                "model": MODEL,
                "prompt": "word " * 300,
                "stream": False,
                "truncate": False,
                "options": {"num_ctx": 64},
            },
        )
        assert (response.status_code, response.json()) == (
            400,
            {"error": "the input length exceeds the context length"},
        )
        cut = client.post(
            f"{emu.url}/api/generate",
            json={"model": MODEL, "prompt": "word " * 300, "stream": False, "options": {"num_ctx": 64}},
        ).json()
        assert cut["prompt_eval_count"] == 64


def test_generate_context_sent_back_hits_the_cache(client: httpx.Client) -> None:
    with emulator() as emu:
        first = client.post(
            f"{emu.url}/api/generate", json={"model": MODEL, "prompt": "Hello there", "stream": False}
        )
        context = first.json()["context"]
        client.post(
            f"{emu.url}/api/generate",
            json={"model": MODEL, "prompt": "Go on", "context": context, "stream": False},
        )
        assert emu.requests_for("/api/generate")[-1].cached_tokens == len(context)


def test_embeddings_do_not_reuse_the_cache(client: httpx.Client) -> None:
    with emulator() as emu:
        for _ in range(2):
            body = client.post(
                f"{emu.url}/api/embed", json={"model": "nomic-embed-text", "input": "a cat"}
            ).json()
            assert body["prompt_eval_count"] > 0
        assert [r.cached_tokens for r in emu.requests_for("/api/embed")] == [0, 0]


async def test_queue_time_shows_in_total_duration_and_timings_add_up() -> None:
    with emulator(num_parallel=1, time_scale=0.001) as emu:
        emu.set_faults(hang_after_chunks=1)  # hold the first generation so the others queue
        async with httpx.AsyncClient(base_url=emu.url, timeout=10) as client:
            calls = [
                asyncio.ensure_future(
                    client.post("/api/chat", json={"model": MODEL, "messages": conversation(t)})
                )
                for t in ("alpha", "beta", "gamma")
            ]
            await emu.wait_for_async(lambda: emu.in_flight(MODEL) == 3)
            emu.clear_faults()
            responses = await asyncio.gather(*calls)
        finals = [json.loads(r.text.splitlines()[-1]) for r in responses]
        records = emu.requests_for("/api/chat")
        for final in finals:
            record = next(r for r in records if r.total_duration == final["total_duration"])
            gap = final["total_duration"] - final["load_duration"] - final["prompt_eval_duration"]
            gap -= final["eval_duration"]
            assert gap >= record.queue_duration >= 0
            assert gap - record.queue_duration < 2_000_000  # the server's own overhead only
    gaps = sorted(
        f["total_duration"] - f["load_duration"] - f["prompt_eval_duration"] - f["eval_duration"]
        for f in finals
    )
    assert gaps[0] < 2_000_000
    assert gaps[1] > finals[0]["eval_duration"] / 2


def test_caches_can_be_inspected_and_cleared(client: httpx.Client) -> None:
    with emulator(num_parallel=2) as emu:
        ask(client, emu, conversation("alpha"))
        slots = emu.prompt_caches()["llama3.2:latest"]
        assert [s["slot"] for s in slots] == [0, 1]
        assert slots[0]["tokens"] > 0 and slots[0]["head"].startswith("<|im_start|>system")
        admin = client.get(f"{emu.url}/__emulator__/prompt_cache").json()
        assert admin["llama3.2:latest"][0]["tokens"] == slots[0]["tokens"]
        client.request("DELETE", f"{emu.url}/__emulator__/prompt_cache", json={})
        assert [s["tokens"] for s in emu.prompt_caches()["llama3.2:latest"]] == [0, 0]
        bad = client.post(f"{emu.url}/__emulator__/settings", json={"prompt_cache": "no"})
        assert (bad.status_code, bad.json()) == (
            400,
            {"error": "prompt_cache must be true or false, not 'no'"},
        )
        assert emu.settings.prompt_cache is True  # a refused change leaves the setting as it was
        ask(client, emu, conversation("alpha"))
        assert last_record(emu).cached_tokens == 0


def test_a_thinking_reply_is_cached_only_up_to_the_reply(client: httpx.Client) -> None:
    # Thinking templates leave earlier reasoning out of the history, so the cached reasoning
    # does not match the next turn's prompt: only the previous prompt is reused.
    with emulator(models=["qwen3"], loaded=["qwen3"]) as emu:
        messages = conversation("epsilon")
        body = {"model": "qwen3", "messages": messages, "think": True, "stream": False}
        first = client.post(f"{emu.url}/api/chat", json=body).json()
        assert first["message"]["thinking"]
        messages += [first["message"], {"role": "user", "content": "Why?"}]
        client.post(f"{emu.url}/api/chat", json={**body, "messages": messages})
        assert last_record(emu).cached_tokens == first["prompt_eval_count"]


def test_a_tool_call_and_its_result_extend_the_cached_prefix(client: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    with emulator() as emu:
        emu.script_tool_calls([{"name": "weather", "arguments": {"city": "Paris"}}])
        messages = conversation("zeta")
        first = ask(client, emu, messages, tools=tools)
        assert first["message"]["tool_calls"]
        messages += [first["message"], {"role": "tool", "content": "sunny"}]
        ask(client, emu, messages, tools=tools)
        # The call as the runner generated it is exactly what the template renders back.
        call_tokens = tokenize(render_assistant("", first["message"]["tool_calls"]))
        assert last_record(emu).cached_tokens == first["prompt_eval_count"] + len(call_tokens)
