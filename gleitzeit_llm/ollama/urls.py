"""Instance URLs: parsing, and keeping credentials out of every message.

A URL may carry ``user:pass@``; the transport sends them as basic auth, and everything a human
or a log sees goes through :func:`redact_url` first.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

from gleitzeit_llm.errors import ConfigError

__all__ = ["DEFAULT_PORT", "parse_instance_url", "redact_url"]

DEFAULT_PORT = 11434
_USERINFO = re.compile(r"(?<=//)[^/@\s]*@")


def redact_url(url: object) -> str:
    """``url`` with any ``user:pass@`` removed; never raises, so it is safe in error paths.

    >>> redact_url("https://alice:s3cret@gpu1.example:11434/")
    'https://gpu1.example:11434/'
    """
    text = str(url)
    if "@" not in text:
        return text
    return _USERINFO.sub("", text)


def parse_instance_url(url: str) -> tuple[str, str | None, str | None]:
    """Split ``url`` into ``(base_url, username, password)``; ``base_url`` has no credentials.

    Like ollama-python's ``OLLAMA_HOST`` parsing, a bare ``host[:port]`` means ``http://`` and
    port 11434; an explicit scheme keeps its usual port. A trailing ``/`` is dropped so paths join
    cleanly (``https://proxy/ollama`` + ``/api/chat``).
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("instance URL is empty", field="url", value=url, hint="e.g. http://127.0.0.1:11434")
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
        bare = True
    else:
        bare = False
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(
            f"instance URL {redact_url(url)!r} is not a URL: {exc}", field="url", value=redact_url(url)
        ) from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"instance URL {redact_url(url)!r} must use http:// or https://",
            field="url",
            value=redact_url(url),
            hint="e.g. http://gpu1:11434",
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"instance URL {redact_url(url)!r} has no host", field="url", value=redact_url(url))
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is None and bare:
        port = DEFAULT_PORT
    netloc = host if port is None else f"{host}:{port}"
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return base, username, password
