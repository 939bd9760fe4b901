"""The tunable behaviour of one emulator (all changeable at run time)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["Settings"]


@dataclass
class Settings:
    """Knobs of an emulated server. Durations are modelled seconds (see ``time_scale``)."""

    #: Concurrent requests per loaded model (``OLLAMA_NUM_PARALLEL``); the rest queue without bound.
    num_parallel: int = 1
    #: Resident models (``OLLAMA_MAX_LOADED_MODELS``); beyond it the least recently used idle one goes.
    max_loaded_models: int = 3
    #: Requests that may wait for a model load before 503 (``OLLAMA_MAX_QUEUE``).
    max_queue: int = 512
    #: Default ``keep_alive`` in seconds (``OLLAMA_KEEP_ALIVE``); negative keeps models forever.
    keep_alive: float = 300.0
    #: Cold-load time of a model.
    load_time: float = 1.0
    #: Base time to first token (prompt evaluation of a tiny prompt).
    ttft: float = 0.02
    #: Prompt evaluation speed; each prompt token adds ``1/prompt_tokens_per_second`` to the TTFT.
    #: ``0`` makes TTFT independent of the prompt length.
    prompt_tokens_per_second: float = 2000.0
    #: Reuse the longest cached prompt prefix of a slot, as Ollama's runner always does: only
    #: uncached tokens cost prompt time. ``False`` evaluates every prompt in full.
    prompt_cache: bool = True
    #: ``OLLAMA_MULTIUSER_CACHE``: pick the least recently used free slot (forking the longest
    #: cached prefix into it) instead of the free slot with the longest common prefix. Applies to
    #: versions before 0.30; from 0.30 (llama-server) the slot choice follows ``version``.
    multiuser_cache: bool = False
    #: Output speed; ``0`` means instantaneous.
    tokens_per_second: float = 50.0
    #: Length of the built-in reply, in tokens (short, so tests are fast).
    reply_tokens: int = 12
    #: Length of the built-in thinking text, in tokens.
    thinking_tokens: int = 8
    #: Real seconds per modelled second: ``0.01`` runs every modelled delay 100x faster.
    time_scale: float = 1.0
    #: What ``/api/version`` reports.
    version: str = "0.12.6"
    #: ``context_length`` of a loaded model when the request gives no ``num_ctx``.
    default_num_ctx: int = 4096
    #: ``False``: ``/api/show`` leaves ``general.architecture`` out of ``model_info``, as some
    #: Ollama-compatible servers do (clients must find ``<arch>.context_length`` another way).
    show_architecture: bool = True

    def update(self, **changes: Any) -> None:
        """Change some settings; unknown names raise ``TypeError``, bad values ``ValueError``
        (and then nothing changes)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
        replace(self, **changes).validate()
        for name, value in changes.items():
            setattr(self, name, value)

    def validate(self) -> None:
        if self.num_parallel < 1:
            raise ValueError("num_parallel must be >= 1")
        if self.max_loaded_models < 1:
            raise ValueError("max_loaded_models must be >= 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if self.time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        for name in ("load_time", "ttft", "prompt_tokens_per_second", "tokens_per_second"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("prompt_cache", "multiuser_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, not {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
