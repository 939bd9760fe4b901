"""Model names as Ollama understands them.

Ollama parses a name as ``[host/][namespace/]model[:tag]`` (``types/model/name.go``,
``ParseName``) with the defaults ``registry.ollama.ai``, ``library`` and ``latest``; the parts
name the manifest file ``host/namespace/model/tag``. So ``mistral``, ``mistral:latest``,
``library/mistral`` and ``registry.ollama.ai/library/mistral:latest`` are one model, a tag is
only looked for after the last ``/`` (``localhost:5000/team/m`` has a port, not a tag), and
``/api/tags`` lists the shortest form (``DisplayShortest``). Routing must therefore compare names
through these functions, never as raw strings::

    >>> normalize_model_name("llama3.2")
    'llama3.2:latest'
    >>> normalize_model_name("registry.ollama.ai/library/mistral")
    'mistral:latest'
    >>> same_model("library/llama3.2", "llama3.2:latest")
    True

Case is the subtle part. The routes that match names against what is installed
(``getExistingName``: generate, embed, show, and chat from 0.15.5) compare every part with
``strings.EqualFold``, so :func:`model_key` folds case, and ``Llama3.2`` is taken to be installed
where ``/api/tags`` lists ``llama3.2``. But a server does not always resolve that way: on Linux
(a case-sensitive file system) ``/api/chat`` before 0.15.5, the legacy ``/api/embeddings`` and
every route before 0.5.2 open the manifest of the spelling as sent. A 404 therefore proves only
that *that spelling* cannot be resolved there, and :func:`spelling_key` keeps case for learning
404s, so that a 404 for ``Llama3.2`` never blocks ``llama3.2``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from gleitzeit_llm.errors import RequestError

__all__ = [
    "DEFAULT_TAG",
    "ModelName",
    "model_key",
    "normalize_model_name",
    "parse_model_name",
    "same_model",
    "spelling_key",
]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


class ModelName(NamedTuple):
    """The four parts that name a manifest (the protocol scheme is not one of them)."""

    host: str
    namespace: str
    model: str
    tag: str


def _cut_last(s: str, sep: str) -> tuple[str, str, bool]:
    i = s.rfind(sep)
    return (s[:i], s[i + 1 :], True) if i >= 0 else (s, "", False)


@lru_cache(maxsize=4096)
def parse_model_name(name: str) -> ModelName:
    """Ollama's ``ParseName``: the parts of ``name`` with the defaults filled in, case kept.

    Surrounding whitespace is ignored (current servers trim it too). Raises
    :class:`~gleitzeit_llm.errors.RequestError` (``field="model"``) when a part is promised by
    its separator but empty (``llama3.2:``, ``/m``, ``h//m``): Ollama never resolves such a name.
    Other characters are not checked here; the server judges them.
    """
    if not isinstance(name, str):
        raise RequestError(f"model name must be a string, got {type(name).__name__}", field="model")
    s = name.strip()
    host = namespace = tag = ""
    empty = not s
    if s.rfind(":") > s.rfind("/"):  # "/" is no tag character, so a registry port is no tag
        s, tag, _ = _cut_last(s, ":")
        empty = empty or not tag
    s, model, promised = _cut_last(s, "/")
    if not promised:
        model, s = s, ""
    else:
        s, namespace, promised = _cut_last(s, "/")
        if not promised:
            namespace, s = s, ""
        else:
            host = s.partition("://")[2] if "://" in s else s
            empty = empty or not host
        empty = empty or not namespace
    if empty or not model:
        raise RequestError(
            f"model name {name!r} has an empty part; expected [host/][namespace/]model[:tag]", field="model"
        )
    return ModelName(host or DEFAULT_HOST, namespace or DEFAULT_NAMESPACE, model, tag or DEFAULT_TAG)


@lru_cache(maxsize=4096)
def normalize_model_name(name: str) -> str:
    """The shortest form of ``name``, as ``/api/tags`` lists it (Ollama's ``DisplayShortest``).

    The default registry is dropped, and then the ``library`` namespace, when they equal the
    defaults ignoring case, as Ollama compares them; the other parts keep their case.
    """
    n = parse_model_name(name)
    if n.host.casefold() != DEFAULT_HOST:
        return f"{n.host}/{n.namespace}/{n.model}:{n.tag}"
    if n.namespace.casefold() != DEFAULT_NAMESPACE:
        return f"{n.namespace}/{n.model}:{n.tag}"
    return f"{n.model}:{n.tag}"


@lru_cache(maxsize=4096)
def model_key(name: str) -> str:
    """A dictionary key for matching ``name`` against installed and loaded models: every part
    compared ignoring case (``strings.EqualFold``), as the server's ``getExistingName`` does."""
    return normalize_model_name(name).casefold()


@lru_cache(maxsize=4096)
def spelling_key(name: str) -> str:
    """A key for one exact spelling: two names share it only if they open the same manifest path
    on a case-sensitive file system. Used for 404s, which are learned for the spelling sent.

    The shortest form, but dropping the defaults only when spelled exactly as Ollama stores them
    (``Library/mistral`` opens ``registry.ollama.ai/Library/mistral/latest``, not ``library``)::

        >>> spelling_key("registry.ollama.ai/library/mistral") == spelling_key("mistral")
        True
        >>> spelling_key("Llama3.2") == spelling_key("llama3.2")
        False
    """
    n = parse_model_name(name)
    if n.host != DEFAULT_HOST:
        return f"{n.host}/{n.namespace}/{n.model}:{n.tag}"
    if n.namespace != DEFAULT_NAMESPACE:
        return f"{n.namespace}/{n.model}:{n.tag}"
    return f"{n.model}:{n.tag}"


def same_model(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` name the same installed model (``llama3.2`` and ``llama3.2:latest`` do)."""
    return a == b or model_key(a) == model_key(b)
