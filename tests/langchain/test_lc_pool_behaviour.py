"""What the pool adds under LangChain: failover mid-run, routing hints, and a drop-in for ChatOllama."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_ollama import ChatOllama
from lc_support import LOOPBACK, chat_bodies

from gleitzeit_llm.testing import OllamaEmulator
from langchain_gleitzeit import ChatOllamaPool

pytestmark = LOOPBACK

HINTS = ("load_balancing_strategy", "instance_tags", "require_gpu", "fallback_model", "max_latency")


def build_chain(llm: BaseChatModel) -> Any:
    """An existing application's chain; only the model object passed in changes."""
    prompt = ChatPromptTemplate.from_messages([("system", "Answer in one line."), ("human", "{question}")])
    return prompt | llm | StrOutputParser()


def served_by(emulators: list[OllamaEmulator]) -> Counter[str]:
    return Counter({f"ollama-{i}": len(chat_bodies(e)) for i, e in enumerate(emulators, start=1)})


# -- failover -------------------------------------------------------------------------------------


def test_a_chain_keeps_answering_when_one_of_three_instances_stops(emulated_pool: Any) -> None:
    provider, emulators = emulated_pool(
        3, load_balancing={"strategy": "round_robin", "retry_backoff_base": 0}
    )
    chain = build_chain(ChatOllamaPool(model="llama3.2", pool=provider))
    failovers: list[Any] = []
    provider.events.subscribe(lambda event: failovers.append(event) if event.kind == "failover" else None)

    def ask(i: int) -> str:
        if i == 10:
            emulators[1].stop()  # ollama-2 dies while other questions are in flight
        return str(chain.invoke({"question": f"question {i}"}))

    with ThreadPoolExecutor(6) as executor:
        answers = list(executor.map(ask, range(30)))
    assert len(answers) == 30 and all(answers)
    before = served_by(emulators)
    assert before["ollama-2"] > 0 and any(f.from_instance == "ollama-2" for f in failovers)
    assert all(chain.batch([{"question": f"after {i}"} for i in range(6)]))
    after = served_by(emulators)
    # Nothing more reached the stopped server; the other two took the rest.
    assert after["ollama-2"] == before["ollama-2"]
    assert after["ollama-1"] > before["ollama-1"] and after["ollama-3"] > before["ollama-3"]


async def test_async_runs_fail_over_while_an_instance_stops(emulated_pool: Any) -> None:
    provider, emulators = emulated_pool(
        3, load_balancing={"strategy": "round_robin", "retry_backoff_base": 0}
    )
    chain = build_chain(ChatOllamaPool(model="llama3.2", pool=provider))
    limit = asyncio.Semaphore(6)

    async def ask(i: int) -> str:
        async with limit:
            if i == 10:
                await asyncio.to_thread(emulators[0].stop)
            return str(await chain.ainvoke({"question": f"question {i}"}))

    answers = await asyncio.gather(*(ask(i) for i in range(30)))
    assert len(answers) == 30 and all(answers)
    # A stream that fails before its first chunk is retried elsewhere too.
    chunks = [c async for c in chain.astream({"question": "streamed"})]
    assert "".join(chunks)


def test_failover_is_reported_in_response_metadata(emulated_pool: Any) -> None:
    provider, emulators = emulated_pool(2, health_checks=False, load_balancing={"retry_backoff_base": 0})
    emulators[0].stop()
    llm = ChatOllamaPool(model="llama3.2", pool=provider, load_balancing_strategy="round_robin")
    infos = [llm.invoke(f"q{i}").response_metadata["pool"] for i in range(4)]
    assert {info["instance_id"] for info in infos} == {"ollama-2"}
    failed_over = [info for info in infos if info["attempts"] > 1]
    assert failed_over and all("ollama-1" not in info["instance_id"] for info in failed_over)
    assert all(info["errors"] for info in failed_over)


# -- routing hints --------------------------------------------------------------------------------


def test_hints_route_to_the_tagged_instance_and_never_reach_ollama(emulated_pool: Any) -> None:
    provider, emulators = emulated_pool(3, tags=[["cpu"], ["gpu"], ["cpu"]], health_checks=False)
    llm = ChatOllamaPool(model="llama3.2", pool=provider)

    for i in range(4):  # per call
        assert (
            llm.invoke(f"a{i}", instance_tags=["gpu"]).response_metadata["pool"]["instance_id"] == "ollama-2"
        )
    gpu = llm.bind(instance_tags=["gpu"], max_latency=60_000)  # through bind
    for i in range(3):
        gpu.invoke(f"b{i}")
    for i in range(3):
        llm.invoke(f"c{i}", require_gpu=True)
    default_gpu = ChatOllamaPool(
        model="llama3.2", pool=provider, instance_tags=["gpu"]
    )  # constructor default
    for i in range(3):
        default_gpu.invoke(f"d{i}")
    assert served_by(emulators) == Counter({"ollama-1": 0, "ollama-2": 13, "ollama-3": 0})

    # A per-call hint overrides the default.
    default_gpu.invoke("e", instance_tags=["cpu"])
    assert served_by(emulators)["ollama-2"] == 13

    for body in chat_bodies(*emulators):
        assert not set(HINTS) & set(body) and not set(HINTS) & set(body.get("options") or {})


async def test_hints_in_async_and_streaming_calls(emulated_pool: Any) -> None:
    provider, emulators = emulated_pool(3, tags=[["cpu"], ["gpu"], ["cpu"]], health_checks=False)
    llm = ChatOllamaPool(model="llama3.2", pool=provider, fallback_model="qwen3")
    await llm.ainvoke("x", instance_tags=["gpu"])
    [c async for c in llm.astream("y", instance_tags=["gpu"])]
    list(llm.stream("z", instance_tags=["gpu"], load_balancing_strategy="round_robin"))
    assert served_by(emulators) == Counter({"ollama-1": 0, "ollama-2": 3, "ollama-3": 0})


# -- drop-in ----------------------------------------------------------------------------------------


def test_swapping_chatollama_for_chatollamapool_is_the_only_change(ollama_emulator: OllamaEmulator) -> None:
    fields = {
        "temperature": 0,
        "num_ctx": 4096,
        "num_predict": 40,
        "seed": 3,
        "top_k": 5,
        "keep_alive": "10m",
    }
    ollama = ChatOllama(model="llama3.2", base_url=ollama_emulator.url, **fields)
    pool = ChatOllamaPool(model="llama3.2", instances=[ollama_emulator.url], health_checks=False, **fields)
    try:
        question = {"question": "Why is the sky blue?"}
        assert build_chain(pool).invoke(question) == build_chain(ollama).invoke(question)
        assert "".join(build_chain(pool).stream(question)) == build_chain(ollama).invoke(question)
        from_pool, from_ollama = chat_bodies(ollama_emulator)[:2]
        for key in ("model", "options", "keep_alive"):
            assert from_pool[key] == from_ollama[key], key
        # ChatOllama also sends an empty image list with every message.
        assert from_pool["messages"] == [
            {k: v for k, v in m.items() if v != []} for m in from_ollama["messages"]
        ]
    finally:
        pool.close()
        ollama._client._client.close()
