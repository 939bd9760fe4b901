"""``timeouts.total`` is a budget for the whole call, and a pool of one retries only when asked."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.errors import AllInstancesFailedError, InstanceError
from gleitzeit_llm.testing import OllamaEmulator

HELLO = [{"role": "user", "content": "hi"}]
Emulators = Callable[..., list[OllamaEmulator]]


def _provider(emulators: list[OllamaEmulator], **settings: Any) -> OllamaPoolProvider:
    timeouts = settings.pop("timeouts", {})
    lb = {"retry_backoff_base": 0.01, "retry_backoff_max": 0.05, **settings}
    return OllamaPoolProvider(
        config={"instances": [e.url for e in emulators], "load_balancing": lb, "timeouts": timeouts},
        health_checks=False,
    )


def _chats(emulators: list[OllamaEmulator]) -> int:
    return sum(len(e.requests_for("/api/chat")) for e in emulators)


def test_a_pool_of_one_makes_one_attempt(ollama_emulators: Emulators) -> None:
    emulators = ollama_emulators(1)
    emulators[0].set_faults(fail_next=1)
    with _provider(emulators) as provider, pytest.raises(InstanceError):
        provider.chat_sync("llama3.2", HELLO)
    assert _chats(emulators) == 1


def test_a_pool_of_one_retries_when_asked(ollama_emulators: Emulators) -> None:
    emulators = ollama_emulators(1)
    emulators[0].set_faults(fail_next=1)
    with _provider(emulators, retry_same_instance=True) as provider:
        answer = provider.chat_sync("llama3.2", HELLO)
    assert answer.pool is not None and answer.pool.attempts == 2
    assert _chats(emulators) == 2


async def test_a_pool_of_two_still_fails_over(ollama_emulators: Emulators) -> None:
    emulators = ollama_emulators(2)
    for emulator in emulators:
        emulator.set_faults(fail_next=1)
    async with _provider(emulators) as provider:
        answer = await provider.chat("llama3.2", HELLO)
    assert answer.pool is not None and answer.pool.attempts == 3  # both failed once, then one served
    assert _chats(emulators) == 3


async def test_the_total_timeout_bounds_the_whole_call_not_each_attempt(ollama_emulators: Emulators) -> None:
    emulators = ollama_emulators(3)
    for emulator in emulators:
        emulator.set_faults(hang=True)
    total = 0.5
    async with _provider(emulators, timeouts={"total": total}) as provider:
        started = time.monotonic()
        with pytest.raises(AllInstancesFailedError, match="total timeout") as caught:
            await provider.chat("llama3.2", HELLO)
        took = time.monotonic() - started
    for emulator in emulators:
        emulator.clear_faults()
    assert took < 3 * total  # not four attempts of 0.5 s each
    assert [getattr(e, "phase", None) for e in caught.value.errors] == ["total"]
    assert _chats(emulators) == 1  # the first attempt used the whole budget: no attempt started after it


async def test_failover_inside_the_budget_still_answers(ollama_emulators: Emulators) -> None:
    emulators = ollama_emulators(2)
    emulators[0].stop()  # refused at once: the budget is barely touched
    async with _provider(emulators, timeouts={"total": 5.0}, strategy="round_robin") as provider:
        answers = [await provider.chat("llama3.2", HELLO) for _ in range(2)]
    assert len({a.pool.url for a in answers if a.pool is not None}) == 1  # the live one served both
