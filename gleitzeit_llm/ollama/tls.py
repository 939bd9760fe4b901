"""TLS settings of one instance as what httpx's ``verify=`` takes."""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path

__all__ = ["tls_verify"]


@lru_cache(maxsize=64)
def tls_verify(
    verify: bool | str = True, client_cert: str | None = None, client_key: str | None = None
) -> bool | ssl.SSLContext:
    """``True``/``False`` when httpx's defaults do, else an SSL context with the CA bundle and
    client certificate loaded (cached: one context per distinct setting, shared by transports)."""
    if client_cert is None and not isinstance(verify, str):
        return verify
    if isinstance(verify, str):
        context = ssl.create_default_context(cafile=str(Path(verify).expanduser()))
    else:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        context.load_cert_chain(
            str(Path(client_cert).expanduser()), str(Path(client_key).expanduser()) if client_key else None
        )
    return context
