"""Instance URLs: the one parser, and the one rule that keeps credentials out of every message.

A URL may carry ``user:pass@``; the transport sends them as basic auth, and everything a human
or a log sees goes through :func:`redact_url` first. The configuration (``InstanceConfig.url``)
and the transports parse with :func:`parse_url`, so both accept and reject the same URLs.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from gleitzeit_llm.errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "URL_HINT",
    "InstanceURL",
    "InvalidURL",
    "parse_instance_url",
    "parse_url",
    "redact_store_url",
    "redact_url",
]

DEFAULT_PORT = 11434
"""Port added to a server address written without scheme and port (``gpu1`` -> ``http://gpu1:11434``)."""
URL_HINT = "expected http(s)://host[:port], e.g. http://localhost:11434"

# Everything between "//" and the last "@" before the path: a password may hold an unescaped "@"
# (urlsplit splits at the last one), and a user name alone may be a token.
_USERINFO = re.compile(r"(?<=//)[^/\s]*@")
_HOST = re.compile(r"^[a-z0-9_](?:[a-z0-9_.\-]*[a-z0-9_])?$")
_SCHEME_PREFIX = re.compile(r"^(https?):/*", re.IGNORECASE)
_API_PATH = re.compile(r"/api(?:/(?:chat|generate|embed|embeddings|tags|ps|show|version|pull))?$")


def redact_url(url: object) -> str:
    """``url`` with any ``user:pass@`` removed; never raises, so it is safe in error paths.

    >>> redact_url("https://alice:s3cret@gpu1.example:11434/")
    'https://gpu1.example:11434/'
    """
    text = str(url)
    if "@" not in text:
        return text
    return _USERINFO.sub("", text)


_SECRET_PARAM = re.compile(r"(?i)([?&](?:password|username|user)=)[^&#]*")


def redact_store_url(url: object) -> str:
    """A shared-state URL (``redis://``, ``rediss://``, ``unix://``) without its credentials:
    the ``user:pass@`` part and ``password=``/``username=`` query parameters; never raises.

    >>> redact_store_url("rediss://app:s3cret@cache:6380/0"), redact_store_url("unix:///r.sock?password=x")
    ('rediss://cache:6380/0', 'unix:///r.sock?password=***')
    """
    return _SECRET_PARAM.sub(r"\1***", redact_url(url))


class InvalidURL(ValueError):
    """Why a string is not an instance URL: ``text`` says what is wrong, ``hint`` what is allowed."""

    def __init__(self, text: str, hint: str = URL_HINT) -> None:
        super().__init__(text)
        self.text = text
        self.hint = hint


@dataclass(frozen=True)
class InstanceURL:
    """A parsed instance URL; ``str()`` is the normalised form, credentials included."""

    scheme: str
    host: str
    """Lower-cased; an IPv6 literal in brackets."""
    port: int | None
    path: str
    """Without a trailing ``/`` (``""`` for none)."""
    userinfo: str = field(default="", repr=False)  # a secret: never in repr
    """``user:pass`` as written, percent-escapes kept."""

    @property
    def address(self) -> str:
        """``host[:port][/path]``: what identifies the server (an instance's default id)."""
        return self.host + (f":{self.port}" if self.port is not None else "") + self.path

    @property
    def base(self) -> str:
        """The URL without credentials: what requests go to."""
        return f"{self.scheme}://{self.address}"

    @property
    def username(self) -> str | None:
        return unquote(self.userinfo.partition(":")[0]) if self.userinfo else None

    @property
    def password(self) -> str | None:
        _, sep, password = self.userinfo.partition(":")
        return unquote(password) if sep else None

    def __str__(self) -> str:
        return f"{self.scheme}://" + (self.userinfo + "@" if self.userinfo else "") + self.address


def parse_url(raw: str) -> InstanceURL:
    """Parse an instance URL; raise :class:`InvalidURL` saying what is wrong.

    Like Ollama's ``OLLAMA_HOST``, a bare ``host[:port]`` means ``http://`` and a bare host port
    11434; an explicit scheme keeps its usual port. Scheme and host are lower-cased, a trailing
    ``/`` is dropped so paths join cleanly (``https://proxy/ollama`` + ``/api/chat``). Rejected: other
    schemes, a query or fragment, an API path, ports outside 1-65535, invalid hosts.

    >>> str(parse_url("GPU1"))
    'http://gpu1:11434'
    """
    text = raw.strip()
    if not text:
        raise InvalidURL("the URL is empty")
    defaulted_port = False
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme.lower() not in ("http", "https"):
            raise InvalidURL(f"scheme {scheme!r} is not supported", hint="use http:// or https://")
    elif _SCHEME_PREFIX.match(text):  # "http:/host", "http:host"
        raise InvalidURL("malformed URL: the scheme must be followed by '://'")
    else:
        text = "http://" + text  # "gpu1:11434" or "gpu1": Ollama's own convention for OLLAMA_HOST
        defaulted_port = True
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        raise InvalidURL("a query string or fragment is not allowed in an instance URL")
    host = parts.hostname
    if not host:
        raise InvalidURL("the URL has no host")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise InvalidURL("the port must be a number from 1 to 65535")
    if ":" in host or "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise InvalidURL(f"invalid host {host!r}") from None
        host = f"[{host}]"
    elif not _HOST.match(host):
        raise InvalidURL(f"invalid host {host!r}")
    path = parts.path.rstrip("/")
    if _API_PATH.search(path):
        raise InvalidURL(
            "give the server's base URL, not an API path",
            hint="e.g. http://gpu1:11434; the client adds /api/...",
        )
    if port is None and defaulted_port:
        port = DEFAULT_PORT
    return InstanceURL(parts.scheme.lower(), host, port, path, parts.netloc.rpartition("@")[0])


def parse_instance_url(url: str) -> tuple[str, str | None, str | None]:
    """Split ``url`` into ``(base_url, username, password)``; ``base_url`` has no credentials.

    The rules are :func:`parse_url`'s; a URL they reject is a :class:`ConfigError` on ``url``
    whose message shows it redacted.
    """
    try:
        if not isinstance(url, str):
            raise InvalidURL(f"expected a URL string, got {type(url).__name__}")
        parsed = parse_url(url)
    except InvalidURL as exc:
        shown = redact_url(url)
        raise ConfigError(
            f"instance URL {shown!r}: {exc.text}; {exc.hint}", field="url", value=shown, hint=exc.hint
        ) from None
    return parsed.base, parsed.username, parsed.password
