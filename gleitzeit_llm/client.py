"""GleitzeitClient: the high-level face of the pool (the guide's ``chat`` and ``batch_process``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gleitzeit_llm.config import PoolConfig
from gleitzeit_llm.errors import GleitzeitError, RequestError
from gleitzeit_llm.provider import OllamaPoolProvider, PoolInfo

__all__ = ["ChatReply", "GleitzeitClient"]


class ChatReply(str):
    """The reply text, which is also a ``str``; ``pool`` says where it came from, ``response``
    is Ollama's full answer (timings, token counts, tool calls)."""

    pool: PoolInfo | None
    response: Any

    def __new__(cls, text: str, *, pool: PoolInfo | None = None, response: Any = None) -> ChatReply:
        reply = super().__new__(cls, text)
        reply.pool = pool
        reply.response = response
        return reply


class GleitzeitClient:
    """Chat with a pool of Ollama servers as if it were one.

    ::

        async with GleitzeitClient(ollama_config={
            "instances": [{"id": "local", "url": "http://localhost:11434"},
                          {"id": "remote", "url": "http://remote:11434"}],
            "load_balancing": {"strategy": "least_loaded", "failover": True},
        }) as client:
            reply = await client.chat("Explain quantum computing", model="llama3.2")
            print(reply, reply.pool.instance_id)

    ``ollama_config`` may also be a :class:`~gleitzeit_llm.config.PoolConfig`, a path to a YAML
    file, or omitted (then ``GLEITZEIT_OLLAMA_*`` environment variables configure the pool).
    """

    def __init__(
        self,
        ollama_config: PoolConfig | Mapping[str, Any] | str | None = None,
        *,
        provider: OllamaPoolProvider | None = None,
        default_model: str | None = None,
    ) -> None:
        self.provider = provider or OllamaPoolProvider(config=PoolConfig.load(ollama_config))
        self.default_model = default_model

    async def __aenter__(self) -> GleitzeitClient:
        await self.provider.initialize()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.provider.close()

    async def close(self) -> None:
        await self.provider.close()

    def _model(self, model: str | None) -> str:
        chosen = model or self.default_model
        if not chosen:
            raise RequestError(
                "chat needs a model: pass model=... or GleitzeitClient(default_model=...)", field="model"
            )
        return chosen

    async def chat(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        model: str | None = None,
        *,
        system: str | None = None,
        **params: Any,
    ) -> ChatReply:
        """Send one prompt (or a list of messages) and return the reply text.

        ``params`` are chat fields (``options``, ``format``, ``keep_alive``, ``think``, ...) and
        routing hints (``load_balancing_strategy``, ``instance_tags``, ``require_gpu``,
        ``fallback_model``, ``max_latency``, ``session_id``).
        """
        messages: list[Any] = []
        if system:
            messages.append({"role": "system", "content": system})
        if isinstance(prompt, str):
            messages.append({"role": "user", "content": prompt})
        else:
            messages.extend(prompt)
        response = await self.provider.chat(self._model(model), messages, **params)
        return ChatReply(response.message.content, pool=response.pool, response=response)

    async def batch_process(
        self,
        directory: str | Path,
        pattern: str = "*.txt",
        method: str = "llm/chat",
        prompt: str = "",
        model: str | None = None,
        max_concurrent: int = 10,
        **params: Any,
    ) -> list[dict[str, Any]]:
        """Run ``prompt`` over every file in ``directory`` matching ``pattern``, spread over the pool.

        At most ``max_concurrent`` calls are in flight at once. Returns one dict per file, in file
        name order: ``file``, ``response`` (text, or the embedding for ``llm/embed``), ``error``
        (None on success) and ``pool`` (instance, attempts, fallback). A failed file does not
        stop the others.
        """
        if method not in ("llm/chat", "llm/generate", "llm/embed"):
            raise RequestError(
                f"unknown method {method!r}; valid methods: llm/chat, llm/generate, llm/embed", field="method"
            )
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise RequestError(
                f"max_concurrent must be an integer >= 1, got {max_concurrent!r}", field="max_concurrent"
            )
        files = await asyncio.to_thread(list_files, Path(directory), pattern)
        chosen = self._model(model)
        gate = asyncio.Semaphore(max_concurrent)

        async def one(path: Path) -> dict[str, Any]:
            async with gate:
                try:
                    text = await asyncio.to_thread(path.read_text, encoding="utf-8", errors="replace")
                    body = f"{prompt}\n\n{text}" if prompt else text
                    if method == "llm/chat":
                        result: Any = await self.provider.chat(
                            chosen, [{"role": "user", "content": body}], **params
                        )
                        answer: Any = result.message.content
                    elif method == "llm/generate":
                        result = await self.provider.generate(chosen, body, **params)
                        answer = result.response
                    else:
                        result = await self.provider.embed(chosen, body, **params)
                        answer = result.embeddings[0] if result.embeddings else []
                except (GleitzeitError, OSError) as exc:
                    return {
                        "file": str(path),
                        "response": None,
                        "error": f"{type(exc).__name__}: {exc}",
                        "pool": None,
                    }
                return {
                    "file": str(path),
                    "response": answer,
                    "error": None,
                    "pool": result.pool.as_dict() if result.pool else None,
                }

        return list(await asyncio.gather(*(one(p) for p in files)))

    async def get_pool_status(self) -> dict[str, Any]:
        return await self.provider.get_pool_status()


def list_files(folder: Path, pattern: str) -> list[Path]:
    if not folder.is_dir():
        raise RequestError(f"directory {str(folder)!r} does not exist or is not a folder", field="directory")
    return sorted(p for p in folder.glob(pattern) if p.is_file())
