"""The prompt-prefix index shared through Redis: two pools in this process stand in for two
processes (each its own store, connections and index) against a real redis-server."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from gleitzeit_llm import OllamaPoolManager
from gleitzeit_llm.manager import Lease
from gleitzeit_llm.ollama.names import model_key
from gleitzeit_llm.routing.prefix import PromptPrefix, capacity_blocks, prompt_prefix
from gleitzeit_llm.state.redis.prefixes import KEY_CHARS, SharedPrefixIndex, pack

from .test_store import eventually

MODEL = "llama3.2"
KEY = model_key(MODEL)  # the model as the index holds it
# No request reaches these: the tests reserve and release slots through the manager.
INSTANCES = [
    {"id": "a", "url": "http://127.0.0.1:9", "max_concurrent": 2},
    {"id": "b", "url": "http://127.0.0.1:10", "max_concurrent": 2},
]
# A small bound: 2 slots x 128 tokens x 4 characters = 1,024 characters = 16 blocks per
# (instance, model).
CACHE_TOKENS = 128


def refreshed_twice(manager: OllamaPoolManager) -> None:
    """Wait until two more snapshot refreshes of ``manager`` ran (a refresh in flight when this
    is called may have read before the write it waits for)."""
    state = manager._shared
    assert state is not None
    for _ in range(2):
        state.refreshed.clear()
        assert state.refreshed.wait(10.0)


@pytest.fixture
def managers(redis_server: Any) -> Iterator[Callable[..., OllamaPoolManager]]:
    """``managers(**shared_state)``: a started manager on Redis routing cache_aware over
    INSTANCES (each closed after the test)."""
    lb = {"strategy": "cache_aware", "prefix_cache_tokens": CACHE_TOKENS}
    with contextlib.ExitStack() as stack:

        def make(**shared: Any) -> OllamaPoolManager:
            state = {"url": redis_server.url, **shared}
            manager = OllamaPoolManager(INSTANCES, load_balancing=lb, shared_state=state, health_checks=False)
            stack.callback(manager.close_sync)
            manager.start()
            return manager

        yield make


def prompt(seed: int, chars: int = 300) -> PromptPrefix:
    text = (f"conversation {seed}: " * 100)[:chars]
    prefix = prompt_prefix("generate", {"prompt": text})
    assert prefix is not None
    return prefix


def route(manager: OllamaPoolManager, prefix: PromptPrefix) -> str:
    """Route one call with ``prefix`` and release its slot; the instance it went to."""
    lease = manager.try_acquire(manager.route_request(MODEL, strategy="cache_aware", prefix=prefix))
    assert isinstance(lease, Lease), lease
    manager.finish(lease)
    return lease.instance_id


def matched(manager: OllamaPoolManager, instance_id: str, prefix: PromptPrefix) -> int:
    with manager._lock:
        return manager._router.prefix_index.matched(instance_id, KEY, prefix)


def client(redis_server: Any) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=2.0)


def test_a_prompt_routed_by_one_process_is_in_the_others_index_after_a_refresh(managers: Any) -> None:
    first, second = managers(), managers()
    conversation = prompt(1)
    where = route(first, conversation)
    assert matched(first, where, conversation) == len(conversation.blocks)

    eventually(lambda: matched(second, where, conversation) == len(conversation.blocks))
    other = "b" if where == "a" else "a"
    assert matched(second, other, conversation) == 0
    # ... so the second process sends the conversation's next turn where its prefix is.
    assert route(second, prompt(1, chars=400)) == where


def test_the_shared_index_of_an_instance_and_model_is_trimmed_to_the_local_bound(
    managers: Any, redis_server: Any
) -> None:
    first = managers()
    bound = capacity_blocks(2, CACHE_TOKENS)
    with first._lock:
        for seed in range(8):  # 4 blocks each: 32 in all, twice the bound
            first._router.prefix_index.record("a", KEY, prompt(seed, chars=256), bound)
    refreshed_twice(first)
    with client(redis_server) as r:
        zset = first._shared.facts.parts[1].zset("a", KEY)  # type: ignore[union-attr]
        members = r.zrange(zset, 0, -1)
        assert len(members) == bound == 16
        # The four prompts recorded last are what is left (LRU), as in the local index.
        assert set(members) == {format(k, "011x") for s in (4, 5, 6, 7) for k in prompt(s, chars=256).blocks}
        assert 0 < r.pttl(zset) <= 3_600_000  # a pool that stopped leaves nothing behind
    assert first._router.prefix_index.size("a", KEY) == bound


def test_a_prompt_routed_again_soon_writes_only_its_new_blocks(managers: Any, redis_server: Any) -> None:
    first = managers()
    index = first._router.prefix_index
    assert isinstance(index, SharedPrefixIndex)
    turn1 = prompt(7, chars=640)  # 10 blocks
    turn2 = prompt(7, chars=768)  # the same 10 and 2 more
    with first._lock:
        index.record("a", MODEL, turn1, 100)
        taken = index.take()
        assert len(taken[("a", MODEL)].keys) == 10
        index.record("a", MODEL, turn2, 100)
        assert list(index.take()[("a", MODEL)].keys) == list(reversed(turn2.blocks[10:]))
        index.record("a", MODEL, turn2, 100)  # the same prompt again, within TOUCH_AFTER
        assert index.take() == {}
    assert len(pack(turn2.blocks)) == KEY_CHARS * 12


def test_inserts_made_while_redis_is_down_are_shared_once_it_is_back(
    managers: Any, redis_server: Any
) -> None:
    first, second = (managers(reconnect_interval=0.1) for _ in range(2))
    redis_server.kill()
    conversation = prompt(3)
    where = route(first, conversation)  # finds Redis gone: runs on local state and index
    assert not first._shared.link.is_up
    assert matched(first, where, conversation) == len(conversation.blocks)
    assert matched(second, where, conversation) == 0
    redis_server.restart()  # back, and empty
    eventually(lambda: matched(second, where, conversation) == len(conversation.blocks), timeout=20.0)
