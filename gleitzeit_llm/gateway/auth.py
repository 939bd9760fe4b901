"""Bearer-key authentication: every route but ``/healthz`` when keys are configured."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

__all__ = ["OPEN_PATHS", "authorized"]

#: Routes a load balancer or orchestrator probes without a key.
OPEN_PATHS = frozenset({"/healthz"})


def authorized(header: bytes | None, keys: Sequence[bytes]) -> bool:
    """Whether an ``Authorization`` header value carries one of ``keys`` as a bearer token.

    Every key is compared, in constant time (:func:`hmac.compare_digest`), so neither the
    outcome's timing nor which key matched leaks.
    """
    if header is None:
        return False
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    token = token.strip()
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key)
    return found
