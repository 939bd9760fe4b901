"""The pydantic fields that LlamaIndex's ``OllamaPool`` and ``OllamaPoolEmbedding`` share: where
their pool comes from (:data:`~gleitzeit_llm.ownership.POOL_FIELDS`, with ``base_url`` and
``request_timeout`` declared by each class in its drop-in's order) and the routing hints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gleitzeit_llm.provider import OllamaPoolProvider

__all__ = ["PoolFields"]


class PoolFields(BaseModel):
    """Mixin: the pool's sources (excluded from serialization: URLs and headers may hold
    secrets) and the routing hints used as defaults for every call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    headers: dict[str, str] | None = Field(
        default=None, exclude=True, description="HTTP headers sent to every server of a pool built here."
    )
    instances: list[Any] | None = Field(
        default=None, exclude=True, description="The Ollama servers: instance dicts or URL strings."
    )
    config: Any = Field(
        default=None, exclude=True, description="A PoolConfig, a mapping or a YAML path instead of instances."
    )
    load_balancing: dict[str, Any] | None = Field(
        default=None, exclude=True, description="load_balancing settings for a pool built from instances."
    )
    pool: OllamaPoolProvider | None = Field(
        default=None, exclude=True, description="An existing OllamaPoolProvider to share."
    )
    shared_state: Any = Field(
        default=None,
        exclude=True,
        repr=False,
        description="Share the pool's state with other processes through Redis: a URL or "
        "{'url': ..., 'namespace': ...} (docs/scale-out.md).",
    )
    load_balancing_strategy: str | None = Field(default=None, description="Routing hint: the strategy.")
    instance_tags: list[str] | None = Field(
        default=None, description="Routing hint: instances with these tags."
    )
    require_gpu: bool = Field(default=False, description="Routing hint: only instances tagged gpu.")
    fallback_model: str | None = Field(
        default=None, description="Routing hint: the model to use when this one fails everywhere."
    )
    max_latency: float | None = Field(default=None, description="Routing hint: latency budget in ms.")
    session_id: str | None = Field(
        default=None, description="Routing hint: keep one conversation's calls on one instance."
    )
