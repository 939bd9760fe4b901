"""``with_routing``: routing hints that survive every wrapper (tools, structured output, agents).

Keyword arguments bound with ``.bind()`` live on the ``RunnableBinding`` wrapper; ``bind_tools``,
``with_structured_output`` and agent constructors build their own binding from the model inside
and drop them. ``with_routing`` returns a copy of the model with the hints as its fields and the
same pool, so whatever wraps it later still routes by them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import tool
from lc_support import LOOPBACK, chat_bodies
from pydantic import BaseModel

from gleitzeit_llm import RequestError
from gleitzeit_llm.testing import OllamaEmulator
from langchain_gleitzeit import ChatOllamaPool, OllamaPoolEmbeddings

pytestmark = LOOPBACK


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"sunny in {city}"


class Person(BaseModel):
    """Someone the text mentions."""

    name: str
    age: int


Pool = tuple[ChatOllamaPool, OllamaEmulator, OllamaEmulator]


@pytest.fixture
def gpu_cpu(ollama_emulators: Any) -> Iterator[Pool]:
    """A model over two emulators, one tagged gpu and one cpu, round robin (so a call without
    hints goes to each in turn), no health checks (every request is visible)."""
    gpu, cpu = ollama_emulators(2)
    llm = ChatOllamaPool(
        model="llama3.2",
        instances=[
            {"id": "gpu", "url": gpu.url, "tags": ["gpu"]},
            {"id": "cpu", "url": cpu.url, "tags": ["cpu"]},
        ],
        load_balancing_strategy="round_robin",
        health_checks=False,
    )
    yield llm, gpu, cpu
    llm.close()


def served(gpu: OllamaEmulator, cpu: OllamaEmulator) -> tuple[int, int]:
    return len(chat_bodies(gpu)), len(chat_bodies(cpu))


def test_with_routing_is_a_model_on_the_same_pool_with_the_hints_as_fields(gpu_cpu: Pool) -> None:
    llm = gpu_cpu[0]
    routed = llm.with_routing(
        instance_tags=["gpu"], fallback_model="qwen3", load_balancing_strategy="Least Loaded"
    )
    assert isinstance(routed, ChatOllamaPool) and routed.provider is llm.provider
    assert routed.instance_tags == ["gpu"] and routed.fallback_model == "qwen3"
    assert routed.load_balancing_strategy == "least_loaded"  # checked and canonical, as the pool takes it
    assert (
        llm.instance_tags is None and llm.load_balancing_strategy == "round_robin"
    )  # the original is untouched
    # Hints not given are kept; None clears one.
    both = routed.with_routing(require_gpu=True)
    assert both.require_gpu and both.instance_tags == ["gpu"] and both.fallback_model == "qwen3"
    assert both.with_routing(instance_tags=None, fallback_model=None).instance_tags is None


def test_with_routing_checks_the_hints_at_once(gpu_cpu: Pool) -> None:
    llm = gpu_cpu[0]
    with pytest.raises(RequestError, match="instance_tags must be a list of strings") as caught:
        llm.with_routing(instance_tags="gpu")  # type: ignore[typeddict-item]
    assert caught.value.field == "instance_tags"
    with pytest.raises(RequestError, match="unknown strategy"):
        llm.with_routing(load_balancing_strategy="fastest")
    with pytest.raises(RequestError, match="max_latency"):
        llm.with_routing(max_latency=-1)
    with pytest.raises(TypeError, match="instance_tag"):
        llm.with_routing(instance_tag=["gpu"])  # type: ignore[call-arg]


def test_every_call_of_a_tool_calling_loop_lands_on_gpu(gpu_cpu: Pool) -> None:
    llm, gpu, cpu = gpu_cpu
    for emulator in (gpu, cpu):  # three rounds of tool calls, then an answer, wherever it runs
        for _ in range(3):
            emulator.script_tool_calls([{"name": "get_weather", "arguments": {"city": "Tokyo"}}])
        emulator.responder = lambda request: "It is sunny in Tokyo."
    agent = llm.with_routing(instance_tags=["gpu"]).bind_tools([get_weather])  # what agents call
    messages: list[BaseMessage] = [HumanMessage("What is the weather in Tokyo?")]
    while True:
        answer = agent.invoke(messages)
        messages.append(answer)
        if not answer.tool_calls:
            break
        messages.extend(get_weather.invoke(call) for call in answer.tool_calls)
    assert answer.content == "It is sunny in Tokyo."
    assert served(gpu, cpu) == (4, 0)


async def test_every_structured_output_call_lands_on_gpu(gpu_cpu: Pool) -> None:
    llm, gpu, cpu = gpu_cpu
    for emulator in (gpu, cpu):
        emulator.script_tool_calls(
            [{"name": "Person", "arguments": {"name": "Ada", "age": 36}}], persistent=True
        )
    routed = llm.with_routing(require_gpu=True)
    for method in ("json_schema", "function_calling"):
        structured = routed.with_structured_output(Person, method=method)  # type: ignore[arg-type]
        assert isinstance(structured.invoke("Ada is 36."), Person)
        assert isinstance(await structured.ainvoke("Ada is 36."), Person)
        [chunk async for chunk in structured.astream("Ada is 36.")]
    raw = routed.with_structured_output(Person, method="function_calling", include_raw=True).invoke("Ada")
    assert raw["parsed"] == Person(name="Ada", age=36)
    assert served(gpu, cpu) == (7, 0)


def test_a_per_call_hint_still_wins(gpu_cpu: Pool) -> None:
    llm, gpu, cpu = gpu_cpu
    routed = llm.with_routing(instance_tags=["gpu"])
    routed.invoke("x", instance_tags=["cpu"])
    assert served(gpu, cpu) == (0, 1)


def test_embeddings_with_routing(gpu_cpu: Pool) -> None:
    llm, gpu, cpu = gpu_cpu
    embeddings = OllamaPoolEmbeddings(model="nomic-embed-text", pool=llm.provider)
    routed = embeddings.with_routing(instance_tags=["gpu"])
    assert isinstance(routed, OllamaPoolEmbeddings) and routed.provider is llm.provider
    routed.embed_documents(["a", "b", "c"])
    routed.embed_query("d")
    assert (len(gpu.requests_for("/api/embed")), len(cpu.requests_for("/api/embed"))) == (2, 0)
    with pytest.raises(RequestError, match="require_gpu"):
        embeddings.with_routing(require_gpu="yes")  # type: ignore[typeddict-item]
