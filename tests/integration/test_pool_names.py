"""Model names through the pool against emulated servers: a 404 is learned for exactly the
spelling the server could not resolve, and every spelling Ollama accepts is routed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gleitzeit_llm import (
    AllInstancesFailedError,
    GleitzeitError,
    NoInstanceAvailableError,
    OllamaPoolProvider,
    RequestError,
)
from gleitzeit_llm.testing import OllamaEmulator

MESSAGES = [{"role": "user", "content": "hello"}]


# Models are pre-loaded: a cold load asks for a probe round, and /api/tags forgets learned 404s.
def pool_for(emulators: list[OllamaEmulator], *, health_checks: bool) -> OllamaPoolProvider:
    return OllamaPoolProvider(
        instances=[{"id": f"e{n}", "url": e.url} for n, e in enumerate(emulators)],
        # one probe round at start (with health checks on), none after it during the test
        load_balancing={"health_check_interval": 3600, "retry_backoff_base": 0.001},
        health_checks=health_checks,
    )


@pytest.mark.parametrize("health_checks", [True, False], ids=["health-checks", "no-health-checks"])
async def test_a_404_for_one_spelling_does_not_block_the_right_one(
    ollama_emulators: Any, health_checks: bool
) -> None:
    # The emulator reports Ollama 0.12.6, whose /api/chat opens the manifest of the requested
    # spelling (GetModel(req.Model)): on Linux `Llama3.2` is 404 while `llama3.2` is installed.
    (emu,) = ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"], time_scale=0)
    async with pool_for([emu], health_checks=health_checks) as pool:
        with pytest.raises(GleitzeitError, match=r"Llama3\.2"):
            await pool.chat("Llama3.2", MESSAGES)
        started = time.monotonic()
        answer = await pool.chat("llama3.2", MESSAGES)
        elapsed = time.monotonic() - started
        # the 404 is remembered for the spelling that got it: no second request for it
        with pytest.raises(NoInstanceAvailableError, match=r"Llama3\.2"):
            await pool.chat("Llama3.2", MESSAGES)
    assert answer.message.content and answer.pool.instance_id == "e0"
    assert elapsed < 5  # served at once, not after a health round (3600 s away)
    assert [r.model for r in emu.requests_for("/api/chat")] == ["Llama3.2", "llama3.2"]


async def test_a_404_for_one_spelling_fails_over_to_an_instance_that_resolves_it(
    ollama_emulators: Any,
) -> None:
    old, new = (
        ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"], time_scale=0)[0],
        ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"], time_scale=0, version="0.15.5")[0],
    )
    async with pool_for([old, new], health_checks=True) as pool:
        # round robin: within two calls e0 gets `Llama3.2` once (404), and the call fails over
        answers = [
            await pool.chat("Llama3.2", MESSAGES, load_balancing_strategy="round_robin") for _ in range(4)
        ]
        lower = [
            await pool.chat("llama3.2", MESSAGES, load_balancing_strategy="round_robin") for _ in range(2)
        ]
    assert {a.pool.instance_id for a in answers} == {"e1"}
    assert [r.model for r in old.requests_for("/api/chat")] == ["Llama3.2", "llama3.2"]
    assert [r.status for r in old.requests_for("/api/chat")] == [404, 200]
    assert {a.pool.instance_id for a in lower} == {"e0", "e1"}  # `llama3.2` still goes to both


@pytest.mark.parametrize(
    "form",
    ["library/mistral", "registry.ollama.ai/library/mistral:latest", "mistral:latest", "Mistral"],
)
async def test_every_spelling_of_an_installed_model_is_routed(ollama_emulators: Any, form: str) -> None:
    (emu,) = ollama_emulators(1, models=["mistral"], loaded=["mistral"], time_scale=0)
    async with pool_for([emu], health_checks=True) as pool:
        answer = await pool.generate(form, "hello")
    assert answer.model == form and answer.response


async def test_a_name_with_an_empty_part_is_rejected_before_any_request(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"], time_scale=0)
    async with pool_for([emu], health_checks=False) as pool:
        for name in ["llama3.2:", "/llama3.2", "library//llama3.2"]:
            with pytest.raises(RequestError) as info:
                await pool.chat(name, MESSAGES)
            assert info.value.field == "model"
    assert emu.requests_for("/api/chat") == []


async def test_when_the_model_and_its_fallback_are_both_missing_the_error_names_both(
    ollama_emulators: Any,
) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"])
    async with OllamaPoolProvider(instances=[{"id": "e", "url": emu.url}]) as pool:
        with pytest.raises(NoInstanceAvailableError) as caught:
            await pool.chat("llama9", [{"role": "user", "content": "hi"}], fallback_model="qwen9")
    message = str(caught.value)
    assert "llama9" in message and "qwen9" in message and "fallback" in message


async def test_a_fallback_missing_after_failed_attempts_is_named_with_them(ollama_emulators: Any) -> None:
    (emu,) = ollama_emulators(1, models=["llama3.2"], loaded=["llama3.2"])
    emu.set_faults(error_rate=1.0)
    settings = {"retry_attempts": 1, "retry_backoff_base": 0.001, "retry_backoff_max": 0.01}
    pool = OllamaPoolProvider(
        instances=[{"id": "e", "url": emu.url}], load_balancing=settings, health_checks=False
    )
    async with pool:
        with pytest.raises(AllInstancesFailedError) as caught:
            await pool.chat("llama3.2", [{"role": "user", "content": "hi"}], fallback_model="qwen9")
    assert "qwen9" in str(caught.value) and "500" in str(caught.value)
