"""Names a package exports but imports on first use (PEP 562), so importing the package stays cheap.

The integrations' packages use it so that ``import langchain_gleitzeit`` neither imports the
framework nor ``prometheus_client`` until a class is asked for::

    __getattr__, __dir__ = lazy_exports(__name__, {"OllamaPool": "llama_index.llms.gleitzeit.base"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    module: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``module``: each name in ``exports`` is imported from
    the module it maps to when first asked for, then kept in ``module``'s namespace."""
    namespace = sys.modules[module].__dict__

    def __getattr__(name: str) -> Any:
        source = exports.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value  # later look-ups find it without coming here
        return value

    def __dir__() -> list[str]:
        # The public face, as for ``from module import *``: not the helpers the package imports.
        return sorted({*namespace.get("__all__", ()), *exports})

    return __getattr__, __dir__
