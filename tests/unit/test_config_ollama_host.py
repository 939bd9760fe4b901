"""``OLLAMA_HOST`` is read as Ollama's own client reads it (issue #14, item 5). Parsing only: no traffic."""

from __future__ import annotations

import pytest
from ollama._client import _parse_host

from gleitzeit_llm.config import PoolConfig
from gleitzeit_llm.config.sources import ollama_host_url
from gleitzeit_llm.errors import ConfigError

# Every form in the docstring of ollama._client._parse_host, and a few more.
FORMS = [
    "1.2.3.4",
    ":56789",
    "1.2.3.4:56789",
    "http://1.2.3.4",
    "https://1.2.3.4",
    "https://1.2.3.4:56789",
    "example.com",
    "example.com:56789",
    "http://example.com",
    "https://example.com",
    "https://example.com:56789",
    "example.com/",
    "example.com:56789/",
    "example.com/path",
    "example.com:56789/path",
    "https://example.com:56789/path",
    "example.com:56789/path/",
    "[0001:002:003:0004::1]",
    "[0001:002:003:0004::1]:56789",
    "http://[0001:002:003:0004::1]",
    "https://[0001:002:003:0004::1]",
    "https://[0001:002:003:0004::1]:56789",
    "[0001:002:003:0004::1]/",
    "[0001:002:003:0004::1]:56789/",
    "[0001:002:003:0004::1]/path",
    "[0001:002:003:0004::1]:56789/path",
    "https://[0001:002:003:0004::1]:56789/path",
    "[0001:002:003:0004::1]:56789/path/",
    "0.0.0.0",
    "0.0.0.0:11434",
    "localhost",
    "http://user:secret@example.com:8080",
    "EXAMPLE.com",
]


@pytest.mark.parametrize("host", FORMS)
def test_ollama_host_means_what_it_means_to_the_ollama_client(host: str) -> None:
    assert ollama_host_url(host) == _parse_host(host)


@pytest.mark.parametrize("host", ["example.com:56789/path", "[::1]:8080", "https://gpu1", ":8080"])
def test_the_pool_of_no_configuration_is_the_server_ollama_host_names(host: str) -> None:
    config = PoolConfig.from_env({"OLLAMA_HOST": host})
    assert [i.url for i in config.instances] == [_parse_host(host)]


def test_gleitzeit_variables_win_over_ollama_host() -> None:
    config = PoolConfig.from_env({"OLLAMA_HOST": "gpu1", "GLEITZEIT_OLLAMA_INSTANCES": "http://cpu1:11434"})
    assert [i.url for i in config.instances] == ["http://cpu1:11434"]


def test_without_ollama_host_the_pool_is_the_local_server() -> None:
    assert [i.url for i in PoolConfig.from_env({"OLLAMA_HOST": "  "}).instances] == ["http://localhost:11434"]


def test_a_bad_ollama_host_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="OLLAMA_HOST"):
        PoolConfig.from_env({"OLLAMA_HOST": "gpu1:99999"})
