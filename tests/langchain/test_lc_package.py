"""The distribution itself: a light import, the public names, and a wheel that builds offline."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from lc_support import NO_SOCKETS

import langchain_gleitzeit

pytestmark = NO_SOCKETS

PACKAGE = Path(__file__).resolve().parents[2] / "integrations" / "langchain-gleitzeit"


def test_public_names() -> None:
    assert set(langchain_gleitzeit.__all__) == {
        "ChatOllamaPool",
        "OllamaPoolEmbeddings",
        "PrometheusCallbackHandler",
        "__version__",
    }
    from langchain_gleitzeit.callbacks import PrometheusCallbackHandler
    from langchain_gleitzeit.chat_models import ChatOllamaPool
    from langchain_gleitzeit.embeddings import OllamaPoolEmbeddings

    assert langchain_gleitzeit.ChatOllamaPool is ChatOllamaPool
    assert langchain_gleitzeit.OllamaPoolEmbeddings is OllamaPoolEmbeddings
    assert langchain_gleitzeit.PrometheusCallbackHandler is PrometheusCallbackHandler
    with pytest.raises(AttributeError):
        _ = langchain_gleitzeit.ChatOllama  # type: ignore[attr-defined]


def test_import_is_light_and_prometheus_is_imported_only_for_the_handler() -> None:
    code = (
        "import sys, langchain_gleitzeit\n"
        "print('langchain_core' in sys.modules, 'prometheus_client' in sys.modules)\n"
        "from langchain_gleitzeit import ChatOllamaPool, OllamaPoolEmbeddings\n"
        "print('prometheus_client' in sys.modules)\n"
        "from langchain_gleitzeit import PrometheusCallbackHandler\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False", "True"]


def test_the_package_builds_its_own_wheel(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            str(PACKAGE),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("langchain_gleitzeit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for module in ("__init__", "chat_models", "embeddings", "callbacks", "_utils", "_pool"):
        assert f"langchain_gleitzeit/{module}.py" in names
    assert "langchain_gleitzeit/py.typed" in names
    assert "Requires-Dist: gleitzeit-llm<0.2,>=0.1" in metadata
    assert "License-File: LICENSE" in metadata
    assert "Requires-Dist: langchain-core" in metadata
    assert "Provides-Extra: prometheus" in metadata
