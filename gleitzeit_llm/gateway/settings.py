"""The gateway's own settings (the pool's are a :class:`~gleitzeit_llm.config.PoolConfig`)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_BODY", "KEYS_ENV", "GatewaySettings", "is_loopback"]

#: Request bodies above this many bytes get 413 (images in a chat are base64: a few MiB).
DEFAULT_MAX_BODY = 8 * 1024 * 1024
#: Comma-separated API keys, added to those given with ``--api-key``.
KEYS_ENV = "GLEITZEIT_GATEWAY_API_KEYS"


@dataclass(frozen=True)
class GatewaySettings:
    """What ``gleitzeit-llm serve`` is told besides the pool.

    ``api_keys``: with any, every route but ``/healthz`` needs ``Authorization: Bearer <key>``.
    ``allow_admin``: pull and delete fan out to the instances; refused otherwise.
    ``max_body``: the largest request body in bytes.
    """

    api_keys: tuple[str, ...] = ()
    allow_admin: bool = False
    max_body: int = DEFAULT_MAX_BODY

    def __post_init__(self) -> None:
        if self.max_body < 1:
            raise ValueError(f"max_body must be a positive number of bytes, got {self.max_body}")
        if any(not key for key in self.api_keys):
            raise ValueError("an API key must not be empty")

    def __repr__(self) -> str:  # keys are never shown
        return (
            f"GatewaySettings(api_keys=<{len(self.api_keys)} key(s)>, allow_admin={self.allow_admin}, "
            f"max_body={self.max_body})"
        )

    @staticmethod
    def keys_from(given: Iterable[str], environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
        """The keys given on the command line plus those of :data:`KEYS_ENV`, blanks dropped."""
        keys = [key.strip() for key in given]
        keys += [key.strip() for key in environ.get(KEYS_ENV, "").split(",")]
        return tuple(dict.fromkeys(key for key in keys if key))


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the gateway on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
