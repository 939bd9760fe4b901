"""``OllamaPoolEmbeddings``: LangChain embeddings over a pool of Ollama servers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field, PrivateAttr, model_validator
from typing_extensions import Self

from gleitzeit_llm.blocking import run_blocking
from gleitzeit_llm.ownership import ProviderOwner
from gleitzeit_llm.tasks import gather_or_cancel
from gleitzeit_llm.upstream_errors import UPSTREAM_ERRORS
from langchain_gleitzeit._pool import PoolFields, PoolHandle, open_pool, refuse_client_kwargs
from langchain_gleitzeit._utils import HINT_FIELDS, option_fields

__all__ = ["OllamaPoolEmbeddings"]

# Concurrent batches of one embed_documents call, at most (the pool's slots bound it further).
_MAX_PARALLEL = 32


class OllamaPoolEmbeddings(PoolFields, Embeddings, ProviderOwner):
    """Ollama embeddings over a pool of Ollama servers: a drop-in for ``OllamaEmbeddings``.

    ::

        from langchain_gleitzeit import OllamaPoolEmbeddings

        embeddings = OllamaPoolEmbeddings(
            model="nomic-embed-text", instances=["http://gpu1:11434", "http://gpu2:11434"]
        )
        vectors = embeddings.embed_documents(texts)  # batches of 32, spread over the pool
        query = embeddings.embed_query("what is in the documents?")

    :meth:`embed_documents` splits the texts into batches of ``batch_size``, sends the batches in
    parallel (the pool spreads them over its instances, each batch with failover) and returns one
    vector per text in the input's order. The pool is given as for
    :class:`~langchain_gleitzeit.ChatOllamaPool` (``instances``, ``config``, ``base_url``,
    ``pool`` to share one, or the ``GLEITZEIT_OLLAMA_*`` environment), and so are the routing hints.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    model: str
    """Embedding model to use, e.g. ``nomic-embed-text``."""
    dimensions: int | None = Field(default=None, ge=1)
    """Truncate the vectors to this many dimensions (models that support it)."""
    validate_model_on_init: bool = False
    """Check at construction that some instance of the pool has the model."""
    keep_alive: int | str | None = None
    """How long the model stays loaded after a request (seconds or ``"5m"``)."""
    truncate: bool | None = None
    """Whether Ollama truncates inputs longer than the context (``False``: an error instead)."""
    batch_size: int = Field(default=32, ge=1)
    """Texts per ``/api/embed`` request."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Batches in flight at once; default: the pool's total slots (at most 32)."""

    mirostat: int | None = None
    mirostat_eta: float | None = None
    mirostat_tau: float | None = None
    num_ctx: int | None = None
    """Context window size."""
    num_gpu: int | None = None
    num_thread: int | None = None
    repeat_last_n: int | None = None
    repeat_penalty: float | None = None
    temperature: float | None = None
    stop: list[str] | None = None
    tfs_z: float | None = None
    top_k: int | None = None
    top_p: float | None = None

    # instances, config, base_url, pool, health_checks and the routing hints: see PoolFields
    # (a fallback_model must give vectors of the same dimensions)

    _handle: PoolHandle = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _client_kwargs(cls, values: Any) -> Any:
        return refuse_client_kwargs(
            values, "OllamaEmbeddings", timeouts="in the pool config (config={'timeouts': {...}})"
        )

    @model_validator(mode="after")
    def _open_pool(self) -> Self:
        self._handle = open_pool(
            pool=self.pool,
            instances=self.instances,
            config=self.config,
            base_url=self.base_url,
            health_checks=self.health_checks,
            validate=self.model if self.validate_model_on_init else None,
            shared_state=self.shared_state,
        )
        return self

    # -- requests --------------------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        options = {name: getattr(self, name) for name in _OPTION_FIELDS if getattr(self, name) is not None}
        params: dict[str, Any] = {
            "options": options or None,
            "dimensions": self.dimensions,
            "keep_alive": self.keep_alive,
            "truncate": self.truncate,
        }
        for name in HINT_FIELDS:
            value = getattr(self, name)
            if value is not None and value is not False:
                params[name] = value
        return {k: v for k, v in params.items() if v is not None}

    def _batches(self, texts: list[str]) -> list[list[str]]:
        return [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]

    def _parallel(self, batches: int) -> int:
        if self.max_concurrency is not None:
            return min(batches, self.max_concurrency)
        instances = self.provider.config.instances
        slots = sum(max(1, inst.max_concurrent) for inst in instances) if instances else 1
        return max(1, min(batches, slots, _MAX_PARALLEL))

    def _checked(self, batch: list[str], response: Any) -> list[list[float]]:
        vectors = [list(vector) for vector in response.embeddings]
        if len(vectors) != len(batch):
            raise ValueError(f"Ollama returned {len(vectors)} embeddings for {len(batch)} texts")
        return vectors

    def _embed_batch(self, batch: list[str], params: Mapping[str, Any]) -> list[list[float]]:
        with UPSTREAM_ERRORS:  # also an ollama.ResponseError, as OllamaEmbeddings raises
            return self._checked(batch, run_blocking(self.provider.embed_sync, self.model, batch, **params))

    async def _aembed_batch(self, batch: list[str], params: Mapping[str, Any]) -> list[list[float]]:
        with UPSTREAM_ERRORS:
            return self._checked(batch, await self.provider.embed(self.model, batch, **params))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order; batches are embedded in parallel across the pool."""
        batches = self._batches(list(texts))
        if not batches:
            return []
        params = self._params()
        if len(batches) == 1:
            return self._embed_batch(batches[0], params)
        executor = ThreadPoolExecutor(self._parallel(len(batches)), thread_name_prefix="gleitzeit-embed")
        try:
            futures = [executor.submit(self._embed_batch, batch, params) for batch in batches]
            return [vector for future in futures for vector in future.result()]
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def embed_query(self, text: str) -> list[float]:
        """The vector of one text."""
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`."""
        batches = self._batches(list(texts))
        if not batches:
            return []
        params = self._params()
        if len(batches) == 1:
            return await self._aembed_batch(batches[0], params)
        limit = asyncio.Semaphore(self._parallel(len(batches)))

        async def one(batch: list[str]) -> list[list[float]]:
            async with limit:
                return await self._aembed_batch(batch, params)

        results = await gather_or_cancel(one(batch) for batch in batches)
        return [vector for batch in results for vector in batch]

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`."""
        return (await self.aembed_documents([text]))[0]


# The option fields declared above (OllamaEmbeddings' set), which travel in ``options``.
_OPTION_FIELDS = option_fields(OllamaPoolEmbeddings.model_fields)
