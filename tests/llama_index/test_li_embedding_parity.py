"""``OllamaPoolEmbedding`` side by side with ``OllamaEmbedding`` on the same emulator: the same texts
reach the server (stripped, instructions joined the same way), so one index serves both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.embeddings.ollama import OllamaEmbedding

from gleitzeit_llm.testing import OllamaEmulator
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding

TEXTS = ["  padded text \n", "plain", "\tboth sides  ", ""]
INSTRUCTIONS = [
    {},
    {"query_instruction": "search_query:", "text_instruction": "search_document:"},
    {"query_instruction": "  padded: \n", "text_instruction": " "},
]


def sent(emulator: OllamaEmulator) -> list[str]:
    """Every text the server was asked to embed, in order (one string or a list per request)."""
    inputs = [r.body["input"] for r in emulator.requests_for("/api/embed")]
    emulator.clear_log()
    return [text for given in inputs for text in ([given] if isinstance(given, str) else given)]


async def exercise(model: BaseEmbedding, emulator: OllamaEmulator) -> list[Any]:
    """Each way LlamaIndex (or an application) asks for embeddings: the vectors and what was sent."""
    general: Any = model
    return [
        (model.get_query_embedding(" what about  the gpu? \n"), sent(emulator)),
        (await model.aget_query_embedding("\nasync query "), sent(emulator)),
        (model.get_text_embedding(TEXTS[0]), sent(emulator)),
        (await model.aget_text_embedding(TEXTS[2]), sent(emulator)),
        (model.get_text_embedding_batch(TEXTS), sent(emulator)),
        (await model.aget_text_embedding_batch(TEXTS), sent(emulator)),
        (general.get_general_text_embedding("  raw  "), sent(emulator)),
        (await general.aget_general_text_embedding(" raw async "), sent(emulator)),
        (general.get_general_text_embeddings(TEXTS), sent(emulator)),
        (await general.aget_general_text_embeddings(TEXTS), sent(emulator)),
    ]


@pytest.mark.parametrize("instructions", INSTRUCTIONS, ids=["none", "prefixes", "blank"])
async def test_same_texts_reach_the_server_as_with_ollama_embedding(
    ollama_emulator: OllamaEmulator,
    make_embedding: Callable[..., OllamaPoolEmbedding],
    instructions: dict[str, str],
) -> None:
    upstream = OllamaEmbedding(model_name="nomic-embed-text", base_url=ollama_emulator.url, **instructions)
    try:
        expected = await exercise(upstream, ollama_emulator)
    finally:  # OllamaEmbedding never closes its clients
        upstream._client._client.close()
        await upstream._async_client._client.aclose()
    assert expected[0][1] != [" what about  the gpu? \n"]  # upstream does strip: the test has teeth
    pooled = make_embedding(base_url=ollama_emulator.url, **instructions)
    assert await exercise(pooled, ollama_emulator) == expected


def test_client_kwargs_says_where_headers_and_timeouts_go(
    ollama_emulator: OllamaEmulator, make_embedding: Callable[..., OllamaPoolEmbedding]
) -> None:
    with pytest.raises(ValueError, match=r"client_kwargs .*headers=.*request_timeout=") as caught:
        make_embedding(base_url=ollama_emulator.url, client_kwargs={"headers": {"Authorization": "x"}})
    assert "Extra inputs are not permitted" not in str(caught.value)
    with pytest.raises(ValueError, match="client_kwargs"):
        fields = {"model_name": "nomic-embed-text", "base_url": ollama_emulator.url}
        OllamaPoolEmbedding.model_validate({**fields, "client_kwargs": {"timeout": 1}})
    # None or empty, as OllamaEmbedding's default: nothing to honour, nothing to refuse
    assert make_embedding(base_url=ollama_emulator.url, client_kwargs=None).get_text_embedding("x")
