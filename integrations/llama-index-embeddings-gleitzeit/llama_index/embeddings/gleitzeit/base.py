"""``OllamaPoolEmbedding``: LlamaIndex embeddings from a gleitzeit pool of Ollama servers."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, model_validator

from gleitzeit_llm.adapter_fields import PoolFields
from gleitzeit_llm.blocking import run_blocking
from gleitzeit_llm.ollama.names import model_key
from gleitzeit_llm.ownership import ProviderHandle, ProviderOwner, provider_of
from gleitzeit_llm.provider import HINT_NAMES, OllamaPoolProvider
from gleitzeit_llm.tasks import gather_or_cancel
from gleitzeit_llm.upstream_errors import as_response_error

__all__ = ["OllamaPoolEmbedding"]

DEFAULT_EMBED_BATCH_SIZE = 64


class OllamaPoolEmbedding(BaseEmbedding, PoolFields, ProviderOwner):
    """Embeddings from a pool of Ollama servers; each batch is split over the pool in parallel.

    A drop-in for ``llama_index.embeddings.ollama.OllamaEmbedding`` (``model_name``,
    ``base_url``, ``embed_batch_size``, ``ollama_additional_kwargs``, ``query_instruction``,
    ``text_instruction``, ``keep_alive``), plus where the pool comes from (``instances``,
    ``config`` or a shared ``pool``) and the routing hints::

        embed_model = OllamaPoolEmbedding(model_name="nomic-embed-text", instances=[...])
        index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)

    A batch of ``embed_batch_size`` texts is cut into ``parallel_requests`` contiguous parts
    (default: one per instance that may serve the model), sent to ``/api/embed`` at once (threads
    for sync calls, tasks for async ones) and put back together in order. Each part is one pool
    call, with failover and the fallback model like any other. Texts and queries are formatted
    as ``OllamaEmbedding`` formats them (stripped, instruction joined by a space), so vectors
    match whichever class built the index.
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(description="The Ollama embedding model.")
    base_url: str | None = Field(
        default=None,
        description="One Ollama server, for a pool of one; instead of instances, config or pool.",
    )
    embed_batch_size: int = Field(
        default=DEFAULT_EMBED_BATCH_SIZE, gt=0, le=2048, description="Texts per LlamaIndex batch."
    )
    parallel_requests: int | None = Field(
        default=None, gt=0, description="Parts a batch is split into (default: one per instance)."
    )
    ollama_additional_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Ollama options sent with every request."
    )
    query_instruction: str | None = Field(default=None, description="Prefix for queries.")
    text_instruction: str | None = Field(default=None, description="Prefix for documents.")
    keep_alive: float | str | None = Field(
        default=None, description="How long the model stays loaded after a request (Ollama's default: 5m)."
    )
    truncate: bool | None = Field(default=None, description="Truncate inputs longer than the context.")
    dimensions: int | None = Field(
        default=None, gt=0, description="Output dimensions, for models that allow it."
    )
    request_timeout: float | None = Field(
        default=None, description="Seconds to wait for an answer (default: the pool's timeouts)."
    )
    _handle: ProviderHandle = PrivateAttr()  # closes the pool if this object built it
    _provider: OllamaPoolProvider = PrivateAttr()

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self._handle = provider_of(self)  # config None: GLEITZEIT_OLLAMA_*, else localhost:11434
        self._provider = self._handle.provider
        instrumentation = _instrumentation()
        if instrumentation is not None:
            instrumentation.instrument_pool(self._provider)

    @model_validator(mode="before")
    @classmethod
    def _client_kwargs(cls, values: Any) -> Any:
        """``OllamaEmbedding``'s ``client_kwargs`` (ollama client settings) have no meaning for a
        pool: say what to use instead; ``None`` or ``{}`` (its default) is dropped."""
        if isinstance(values, Mapping) and "client_kwargs" in values:
            values = dict(values)
            if values.pop("client_kwargs"):
                raise ValueError(
                    "client_kwargs are OllamaEmbedding's ollama client settings; a pool sends headers= "
                    "to every server it builds (or per instance: instances=[{'url': ..., 'headers': "
                    "{...}}]) and takes timeouts from request_timeout= or the pool config"
                )
        return values

    @classmethod
    def class_name(cls) -> str:
        return "OllamaPoolEmbedding"

    def to_payload(self) -> dict[str, Any]:
        payload = super().to_payload()
        payload.update({name: getattr(self, name) for name in HINT_NAMES if getattr(self, name)})
        return payload

    # -- LlamaIndex's hooks: texts formatted as OllamaEmbedding formats them ---------------------

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([_formatted(self.query_instruction, query)])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aembed([_formatted(self.query_instruction, query)]))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([_formatted(self.text_instruction, text)])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aembed([_formatted(self.text_instruction, text)]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed([_formatted(self.text_instruction, t) for t in texts])

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._aembed([_formatted(self.text_instruction, t) for t in texts])

    # -- OllamaEmbedding's public extras: texts sent as they are (argument names as upstream's) ---

    def get_general_text_embedding(self, texts: str) -> Embedding:
        """The embedding of one text, sent as it is: no instruction, not stripped."""
        return self._embed([texts])[0]

    async def aget_general_text_embedding(self, prompt: str) -> Embedding:
        """Async twin of :meth:`get_general_text_embedding`."""
        return (await self._aembed([prompt]))[0]

    def get_general_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        """The embeddings of ``texts``, sent as they are, split over the pool like any batch."""
        return self._embed(list(texts))

    async def aget_general_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        """Async twin of :meth:`get_general_text_embeddings`."""
        return await self._aembed(list(texts))

    # -- the pool -----------------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            name: getattr(self, name) for name in HINT_NAMES if getattr(self, name) not in (None, False)
        }
        for name in ("keep_alive", "truncate", "dimensions"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.ollama_additional_kwargs:
            params["options"] = dict(self.ollama_additional_kwargs)
        return params

    def _parts(self, texts: list[str]) -> list[list[str]]:
        """``texts`` cut into contiguous parts of nearly equal size, one per parallel request."""
        wanted = self.parallel_requests
        if wanted is None:
            key = model_key(self.model_name)
            instances = [i for i in self._provider.manager.instances if not i.removed]
            wanted = sum(1 for i in instances if i.may_serve(key)) or len(instances)
        count = max(1, min(wanted, len(texts)))
        size, extra = divmod(len(texts), count)
        parts, start = [], 0
        for index in range(count):
            end = start + size + (1 if index < extra else 0)
            parts.append(texts[start:end])
            start = end
        return parts

    def _embed(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        parts = self._parts(texts)
        if len(parts) == 1:
            return self._embed_part(parts[0])
        executor = ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="gleitzeit-embed")
        try:
            # Each worker runs in a copy of this context: the pool's events keep the caller's span.
            futures = [executor.submit(contextvars.copy_context().run, self._embed_part, p) for p in parts]
            results = [future.result() for future in futures]
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        return [vector for result in results for vector in result]

    async def _aembed(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        parts = self._parts(texts)
        if len(parts) == 1:
            return await self._aembed_part(parts[0])
        results = await gather_or_cancel(self._aembed_part(p) for p in parts)
        return [vector for result in results for vector in result]

    def _embed_part(self, texts: list[str]) -> list[Embedding]:
        started = time.perf_counter()
        try:
            response = run_blocking(self._provider.embed_sync, self.model_name, texts, **self._params())
        except BaseException as exc:
            self._report(texts, started, None, as_response_error(exc))
            raise
        self._report(texts, started, response, None)
        return _checked(response.embeddings, texts)

    async def _aembed_part(self, texts: list[str]) -> list[Embedding]:
        started = time.perf_counter()
        try:
            response = await self._provider.embed(self.model_name, texts, **self._params())
        except BaseException as exc:
            self._report(texts, started, None, as_response_error(exc))
            raise
        self._report(texts, started, response, None)
        return _checked(response.embeddings, texts)

    def _report(
        self, texts: Sequence[str], started: float, response: Any, error: BaseException | None
    ) -> None:
        """One PoolEmbeddingCallEvent per pool call, when llama-index-llms-gleitzeit is installed."""
        instrumentation = _instrumentation()
        if instrumentation is None or not instrumentation.listening():
            return
        info = getattr(response, "pool", None)
        attempts = info.attempts if info is not None else _attempts(error)
        instrumentation.dispatcher.event(
            instrumentation.PoolEmbeddingCallEvent(
                model=self.model_name,
                texts=len(texts),
                duration=time.perf_counter() - started,
                instance=info.instance_id if info is not None else getattr(error, "instance", None),
                instance_url=info.url if info is not None else None,
                response_model=info.model if info is not None else None,
                attempts=attempts,
                fallback_model=info.model if info is not None and info.fallback_used else None,
                input_tokens=getattr(response, "prompt_eval_count", None),
                error_type=type(error).__name__ if error is not None else None,
            )
        )


def _formatted(instruction: str | None, text: str) -> str:
    """``OllamaEmbedding._format_query``/``_format_text``: stripped, the instruction joined by a space."""
    if instruction:
        return f"{instruction.strip()} {text.strip()}".strip()
    return text.strip()


def _checked(embeddings: list[Embedding], texts: Sequence[str]) -> list[Embedding]:
    if len(embeddings) != len(texts):
        raise ValueError(f"asked for {len(texts)} embeddings, got {len(embeddings)}")
    return embeddings


def _attempts(error: BaseException | None) -> int | None:
    errors = getattr(error, "errors", None)
    if isinstance(errors, list):
        return len(errors)
    return 1 if error is not None and getattr(error, "instance", None) else None


_UNSET: Any = object()
_instrumentation_module: Any = _UNSET


def _instrumentation() -> Any:
    """``llama_index.llms.gleitzeit.events`` if installed: the pool's instrumentation events."""
    global _instrumentation_module
    if _instrumentation_module is _UNSET:
        try:
            from llama_index.llms.gleitzeit import events
        except ImportError:
            events = None  # type: ignore[assignment]
        _instrumentation_module = events
    return _instrumentation_module
