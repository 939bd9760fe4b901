"""Model names the way an Ollama server parses and looks them up.

A port of ollama/ollama ``types/model/name.go`` (``ParseNameBare``, ``ParseName``, ``IsValid``,
``DisplayShortest``) and of how ``server/routes.go`` finds the manifest for a request, written
apart from :mod:`gleitzeit_llm.ollama.names` on purpose: the emulator is the reference the
pool's own name handling is tested against.

How a Linux server finds ``req.Model`` (manifests live at ``host/namespace/model/tag`` on a
case-sensitive file system):

* since 0.5.2, ``/api/generate``, ``/api/embed`` and ``/api/show`` first replace each part with
  an installed one that ``strings.EqualFold``-matches it (``getExistingName``), so case does not
  matter there;
* ``/api/chat`` did the same but then opened ``GetModel(req.Model)``, the spelling as sent, until
  0.15.5 (``ollama launch improvements``, #14099); from 0.15.5 it opens the resolved name;
* the legacy ``/api/embeddings`` never resolves: it opens the spelling as sent;
* before 0.5.2 every route opened the spelling as sent.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["OllamaName", "display_shortest", "folds_case", "parse_name", "parse_name_bare", "version_tuple"]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
#: What a part promised by its separator but empty is set to (never valid).
MISSING_PART = "!MISSING!"

_PART = {
    # first character alphanumeric or "_", then these; lengths as in isValidLen
    "host": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*"), 350),
    "namespace": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*"), 80),
    "model": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), 80),
    "tag": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), 80),
}


class OllamaName(NamedTuple):
    """``model.Name`` without the protocol scheme (it is not part of the manifest path)."""

    host: str
    namespace: str
    model: str
    tag: str

    def is_valid(self) -> bool:
        """``Name.IsValid``: every part present and well-formed."""
        for kind, part in zip(("host", "namespace", "model", "tag"), self, strict=True):
            pattern, longest = _PART[kind]
            if not 1 <= len(part) <= longest or not pattern.fullmatch(part):
                return False
        return True

    def folded(self) -> OllamaName:
        """For ``strings.EqualFold`` comparisons of every part."""
        return OllamaName(*(part.casefold() for part in self))


def _cut_promised(s: str, sep: str) -> tuple[str, str, bool]:
    i = s.rfind(sep)
    if i < 0:
        return s, "", False
    return s[:i] or MISSING_PART, s[i + len(sep) :] or MISSING_PART, True


def parse_name_bare(s: str) -> OllamaName:
    """``ParseNameBare``: split ``[host/][namespace/]model[:tag]`` without defaults."""
    host = namespace = tag = ""
    if s.rfind(":") > s.rfind("/"):  # "/" is not a tag character, so a host port is no tag
        s, tag, _ = _cut_promised(s, ":")
    s, model, promised = _cut_promised(s, "/")
    if not promised:
        return OllamaName("", "", s, tag)
    s, namespace, promised = _cut_promised(s, "/")
    if not promised:
        return OllamaName("", s, model, tag)
    _scheme, sep, rest = s.partition("://")
    host = rest if sep else s
    return OllamaName(host, namespace, model, tag)


def parse_name(s: str) -> OllamaName:
    """``ParseName``: the bare parse merged with the defaults."""
    bare = parse_name_bare(s)
    return OllamaName(
        bare.host or DEFAULT_HOST, bare.namespace or DEFAULT_NAMESPACE, bare.model, bare.tag or DEFAULT_TAG
    )


def display_shortest(name: OllamaName) -> str:
    """``DisplayShortest``: what ``/api/tags`` and ``/api/ps`` list."""
    if name.host.casefold() != DEFAULT_HOST:
        return f"{name.host}/{name.namespace}/{name.model}:{name.tag}"
    if name.namespace.casefold() != DEFAULT_NAMESPACE:
        return f"{name.namespace}/{name.model}:{name.tag}"
    return f"{name.model}:{name.tag}"


def version_tuple(text: str) -> tuple[int, int, int]:
    """``(major, minor, patch)`` of a reported Ollama version (a development build is the newest)."""
    return _version(text)


def _version(text: str) -> tuple[int, int, int]:
    numbers = [int(n) for n in re.findall(r"\d+", text.split("-", 1)[0])[:3]]
    if not numbers:
        return (999, 0, 0)  # a development build: behave like the newest server
    major, minor, patch = [*numbers, 0, 0][:3]
    return major, minor, patch


def folds_case(route: str, version: str) -> bool:
    """Whether ``route`` (``chat``, ``generate``, ``embed``, ``show``, ``embeddings``) of a Linux
    server reporting ``version`` finds an installed model whatever the case of the request."""
    v = _version(version)
    if route == "embeddings" or v < (0, 5, 2):
        return False
    if route == "chat":
        return v >= (0, 15, 5)
    return True
