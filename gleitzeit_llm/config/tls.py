"""TLS files named in the configuration, checked when it loads.

A ``verify`` bundle or client certificate that is missing or not PEM is a configuration error that
names the field, not an ``SSLError`` out of the first request. ``tls_verify`` caches the SSL
context it makes here, so the transports use the same one.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from gleitzeit_llm.config.errors import _Invalid
from gleitzeit_llm.ollama.tls import tls_verify


def _existing_file(path: str, what: str) -> None:
    if not Path(path).expanduser().is_file():
        raise _Invalid(f"no such file: {path}", hint=f"expected {what}")


def _tls_reason(exc: Exception) -> str:
    text = str(exc.args[1]) if isinstance(exc, OSError) and len(exc.args) > 1 else str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text) or type(exc).__name__


def _load_tls(
    verify: bool | str, cert: str | None, key: str | None, field: str, what: str, hint: str
) -> None:
    try:
        tls_verify(verify, cert, key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise _Invalid(
            f"{what}: {_tls_reason(exc)}",
            hint=hint,
            sub_loc=(field,) if field else (),
            value=cert if field else verify,
        ) from None
