"""Each distribution's metadata, read from its pyproject.toml (nothing is built)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = {
    "langchain-gleitzeit": ROOT / "integrations/langchain-gleitzeit",
    "llama-index-llms-gleitzeit": ROOT / "integrations/llama-index-llms-gleitzeit",
    "llama-index-embeddings-gleitzeit": ROOT / "integrations/llama-index-embeddings-gleitzeit",
}
DISTRIBUTIONS = {"gleitzeit-llm": ROOT, **ADAPTERS}


def pyproject(folder: Path) -> dict[str, Any]:
    with (folder / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def core_minor() -> str:
    version = re.search(r'"(\d+\.\d+)\.', (ROOT / "gleitzeit_llm/_version.py").read_text())
    assert version is not None
    return version.group(1)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_every_distribution_ships_the_license_and_links(name: str) -> None:
    folder = DISTRIBUTIONS[name]
    project = pyproject(folder)["project"]
    assert project["name"] == name
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    # The same text as the root's, the reference.
    assert (folder / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert {"Homepage", "Repository", "Issues", "Documentation"} <= set(project["urls"])
    assert project["urls"] == pyproject(ROOT)["project"]["urls"]


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapters_pin_the_core_minor_series_whose_internals_they_import(name: str) -> None:
    project = pyproject(ADAPTERS[name])["project"]
    major, minor = (int(part) for part in core_minor().split("."))
    pin = f">={major}.{minor},<{major}.{minor + 1}"
    core = [d for d in project["dependencies"] if re.match(r"gleitzeit-llm\b", d)]
    assert core == [f"gleitzeit-llm{pin}"]
    for extra in project.get("optional-dependencies", {}).values():
        for requirement in extra:
            if requirement.startswith("gleitzeit-llm"):
                assert requirement.endswith(pin), requirement


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_test_tools_are_dependency_groups_not_published_extras(name: str) -> None:
    data = pyproject(DISTRIBUTIONS[name])
    assert "test" not in data["project"].get("optional-dependencies", {})
    for group in data.get("dependency-groups", {}).values():
        assert all(isinstance(requirement, str) for requirement in group)
    makefile = (ROOT / "Makefile").read_text()
    assert "[test" not in makefile
    if "dependency-groups" in data:
        folder = DISTRIBUTIONS[name]
        where = "" if folder == ROOT else f"{folder.relative_to(ROOT)}/pyproject.toml:"
        assert f"--group {where}test" in makefile


def test_the_root_and_langchain_test_groups_hold_the_test_tools() -> None:
    assert any(r.startswith("pytest>=") for r in pyproject(ROOT)["dependency-groups"]["test"])
    langchain = pyproject(ADAPTERS["langchain-gleitzeit"])["dependency-groups"]["test"]
    assert any(r.startswith("langchain-tests") for r in langchain)


@pytest.mark.parametrize(
    ("name", "import_path", "classes"),
    [
        (
            "llama-index-llms-gleitzeit",
            "llama_index.llms.gleitzeit",
            {"OllamaPool", "PrometheusEventHandler"},
        ),
        ("llama-index-embeddings-gleitzeit", "llama_index.embeddings.gleitzeit", {"OllamaPoolEmbedding"}),
    ],
)
def test_llamaindex_packages_carry_llamahub_metadata(name: str, import_path: str, classes: set[str]) -> None:
    llamahub = pyproject(ADAPTERS[name])["tool"]["llamahub"]
    assert llamahub["import_path"] == import_path
    assert llamahub["contains_example"] is False
    assert set(llamahub["class_authors"]) == classes
