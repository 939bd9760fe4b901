"""Model names as Ollama understands them.

Ollama resolves ``llama3.2`` to ``llama3.2:latest`` and shows the shortest form in ``/api/tags``
and ``/api/ps`` (default registry ``registry.ollama.ai`` and namespace ``library`` left out),
while chat/generate/embed responses echo the request's string verbatim. Routing must therefore
compare names through :func:`normalize_model_name`, never as raw strings::

    >>> normalize_model_name("llama3.2")
    'llama3.2:latest'
    >>> normalize_model_name("hf.co/org/repo:Q4_K_M")
    'hf.co/org/repo:Q4_K_M'
    >>> same_model("library/llama3.2", "llama3.2:latest")
    True
"""

from __future__ import annotations

from functools import lru_cache

from gleitzeit_llm.errors import RequestError

__all__ = ["DEFAULT_TAG", "model_key", "normalize_model_name", "same_model"]

DEFAULT_TAG = "latest"
_DEFAULT_REGISTRY = "registry.ollama.ai/"
_DEFAULT_NAMESPACE = "library/"


@lru_cache(maxsize=4096)
def normalize_model_name(name: str) -> str:
    """Return the canonical ``[host/][namespace/]model:tag`` form of ``name``.

    A missing tag becomes ``:latest``; a tag is only looked for after the last ``/`` (so a
    registry port such as ``localhost:5000/m`` is not a tag). The default registry and the
    ``library`` namespace are dropped, as Ollama does when it lists models. Case is kept.

    Raises :class:`~gleitzeit_llm.errors.RequestError` (``field="model"``) for an empty name.
    """
    if not isinstance(name, str):
        raise RequestError(f"model name must be a string, got {type(name).__name__}", field="model")
    canonical = name.strip()
    if canonical[: len(_DEFAULT_REGISTRY)].lower() == _DEFAULT_REGISTRY:
        canonical = canonical[len(_DEFAULT_REGISTRY) :]
    if (
        canonical[: len(_DEFAULT_NAMESPACE)].lower() == _DEFAULT_NAMESPACE
        and "/" not in canonical[len(_DEFAULT_NAMESPACE) :]
    ):
        canonical = canonical[len(_DEFAULT_NAMESPACE) :]
    slash = canonical.rfind("/")
    last = canonical[slash + 1 :]
    if not last or last.startswith(":"):
        raise RequestError(f"model name is required, got {name!r}", field="model")
    colon = last.find(":")
    if colon == -1:
        return f"{canonical}:{DEFAULT_TAG}"
    if colon == len(last) - 1:  # "llama3.2:" means the default tag
        return f"{canonical}{DEFAULT_TAG}"
    return canonical


@lru_cache(maxsize=4096)
def model_key(name: str) -> str:
    """A dictionary key for ``name``: normalised and case-folded (Ollama matches names case-insensitively)."""
    return normalize_model_name(name).casefold()


def same_model(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` name the same model (``llama3.2`` and ``llama3.2:latest`` do)."""
    return a == b or model_key(a) == model_key(b)
