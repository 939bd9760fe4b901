"""provider_from_options: the one way the adapters turn their pool arguments into a provider."""

from __future__ import annotations

import pytest

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.errors import ConfigError
from gleitzeit_llm.options import provider_from_options

URL = "http://127.0.0.1:21301"


def test_one_source_at_most() -> None:
    with pytest.raises(ValueError, match="not instances and base_url"):
        provider_from_options(instances=[URL], base_url=URL)


def test_a_shared_pool_is_used_as_it_is_and_not_owned() -> None:
    shared = OllamaPoolProvider(instances=[URL], health_checks=False)
    with shared:
        assert provider_from_options(pool=shared) == (shared, False)
        with pytest.raises(ValueError, match="timeouts: settings of a pool of our own"):
            provider_from_options(pool=shared, timeouts={"total": 5})
        with pytest.raises(TypeError, match="pool must be an OllamaPoolProvider"):
            provider_from_options(pool="http://x")


def test_overrides_are_validated_and_keep_credentials() -> None:
    instances = [{"url": "http://user:secret@127.0.0.1:21302", "headers": {"X-Team": "own"}}, URL]
    provider, owned = provider_from_options(
        instances=instances,
        load_balancing={"strategy": "round_robin"},
        timeouts={"first_byte": 3},
        headers={"X-Team": "default", "Authorization": "Bearer t"},
        health_checks=False,
    )
    with provider:
        cfg = provider.config
        assert owned and cfg.load_balancing.strategy == "round_robin" and cfg.timeouts.first_byte == 3
        assert cfg.instances[0].url == "http://user:secret@127.0.0.1:21302"
        assert cfg.instances[0].headers == {"X-Team": "own", "Authorization": "Bearer t"}  # its own win
        assert cfg.instances[1].headers == {"X-Team": "default", "Authorization": "Bearer t"}
    with pytest.raises(ConfigError, match=r"load_balancing\.strategy"):
        provider_from_options(instances=[URL], load_balancing={"strategy": "fastest"})
    with pytest.raises(ConfigError, match=r"timeouts\.idle"):
        provider_from_options(instances=[URL], timeouts={"idle": -1})
