"""``configurable_fields``: a model rebuilt per call from configured fields keeps its pool.

LangChain's ``RunnableConfigurableFields`` constructs a new model object for every call that
configures a field. Unless a configured field defines the pool (``instances``, ``base_url``, ...),
the rebuilt model must use the pool of the model it came from: one pool state (health, breakers,
in-flight counts), not one fresh pool per call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.runnables import ConfigurableField
from lc_support import LOOPBACK, chat_bodies

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.testing import OllamaEmulator
from langchain_gleitzeit import ChatOllamaPool

pytestmark = LOOPBACK


@pytest.fixture
def providers_built(monkeypatch: pytest.MonkeyPatch) -> list[OllamaPoolProvider]:
    """Every ``OllamaPoolProvider`` constructed during the test."""
    built: list[OllamaPoolProvider] = []
    original = OllamaPoolProvider.__init__

    def counting_init(self: OllamaPoolProvider, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(OllamaPoolProvider, "__init__", counting_init)
    return built


@pytest.fixture
def two(ollama_emulators: Any) -> Iterator[tuple[ChatOllamaPool, list[OllamaEmulator]]]:
    """A model that builds its own pool of two emulators: round robin, no health checks (every
    request is visible), one failure opens an instance's breaker, no backoff."""
    emulators = ollama_emulators(2)
    config = {
        "instances": [{"id": f"ollama-{i}", "url": e.url} for i, e in enumerate(emulators, start=1)],
        "load_balancing": {
            "strategy": "round_robin",
            "retry_backoff_base": 0,
            "circuit_breaker": {"failure_threshold": 1},
        },
    }
    llm = ChatOllamaPool(model="llama3.2", config=config, health_checks=False)
    yield llm, emulators
    llm.close()


def test_configured_calls_share_the_pool_of_the_model_they_came_from(
    providers_built: list[OllamaPoolProvider], two: Any
) -> None:
    llm, emulators = two
    configurable = llm.configurable_fields(
        temperature=ConfigurableField(id="temperature"),
        fallback_model=ConfigurableField(id="fallback_model"),
    )
    temperatures = [0.1, 0.2, 0.3, 0.4, 0.5]
    for t in temperatures:
        configurable.invoke("hi", config={"configurable": {"temperature": t}})
    assert len(providers_built) == 1, "configured calls built pools of their own"
    # The configured value reached Ollama: the rebuilt model is really the configured one.
    assert [b["options"]["temperature"] for b in chat_bodies(*emulators)] == temperatures
    # A configured routing hint steers the same pool; it does not define a new one.
    configurable.invoke("hi", config={"configurable": {"fallback_model": "qwen3"}})
    # with_config, batch and async calls configure the same way.
    configurable.with_config(configurable={"temperature": 0.6}).invoke("hi")
    configurable.batch(["a", "b"], config=[{"configurable": {"temperature": t}} for t in (0.7, 0.8)])
    assert len(providers_built) == 1
    assert len(chat_bodies(*emulators)) == 9


async def test_async_configured_calls_share_the_pool(
    providers_built: list[OllamaPoolProvider], two: Any
) -> None:
    llm, emulators = two
    configurable = llm.configurable_fields(temperature=ConfigurableField(id="temperature"))
    await configurable.ainvoke("hi", config={"configurable": {"temperature": 0.1}})
    [c async for c in configurable.astream("hi", config={"configurable": {"temperature": 0.2}})]
    assert len(providers_built) == 1 and len(chat_bodies(*emulators)) == 2


def test_an_instance_down_in_the_original_is_skipped_by_configured_calls(two: Any) -> None:
    llm, emulators = two
    emulators[0].stop()
    # Two calls by round robin: one of them meets ollama-1 dead, fails over and opens its breaker.
    infos = [llm.invoke(f"q{i}").response_metadata["pool"] for i in range(2)]
    assert sum(info["attempts"] for info in infos) == 3
    assert llm.provider.status()["instances"]["ollama-1"]["circuit_breaker_open"]

    configurable = llm.configurable_fields(temperature=ConfigurableField(id="temperature"))
    for t in (0.1, 0.2, 0.3, 0.4, 0.5):
        message = configurable.invoke("hi", config={"configurable": {"temperature": t}})
        pool = message.response_metadata["pool"]
        assert (pool["instance_id"], pool["attempts"]) == ("ollama-2", 1), "paid a failover"


def test_a_configured_pool_field_builds_a_new_pool(
    providers_built: list[OllamaPoolProvider], ollama_emulators: Any
) -> None:
    first, second = ollama_emulators(2)
    llm = ChatOllamaPool(model="llama3.2", base_url=first.url, health_checks=False)
    configurable = llm.configurable_fields(base_url=ConfigurableField(id="base_url"))
    configurable.invoke("hi")  # nothing configured: the model itself
    configurable.invoke("hi", config={"configurable": {"base_url": second.url}})
    assert (len(chat_bodies(first)), len(chat_bodies(second))) == (1, 1)
    assert len(providers_built) == 2
    llm.close()


def test_a_configured_model_is_validated_against_the_shared_pool(
    providers_built: list[OllamaPoolProvider], ollama_emulators: Any
) -> None:
    (emulator,) = ollama_emulators(1)
    llm = ChatOllamaPool(model="llama3.2", base_url=emulator.url, validate_model_on_init=True)
    configurable = llm.configurable_fields(model=ConfigurableField(id="model"))
    assert configurable.invoke("hi", config={"configurable": {"model": "qwen3"}}).content
    with pytest.raises(ValueError, match="Model `missing-model` not found"):
        configurable.invoke("hi", config={"configurable": {"model": "missing-model"}})
    # The failed check left the shared pool open: the original still answers.
    assert llm.invoke("hi").content and len(providers_built) == 1
    llm.close()
