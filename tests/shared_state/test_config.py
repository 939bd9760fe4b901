"""shared_state reaches the pool from every way in (keyword, YAML, environment, adapters, CLI),
never shows its credentials, and fails clearly when it cannot work."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from gleitzeit_llm import ConfigError, OllamaPoolManager, OllamaPoolProvider, PoolConfig
from gleitzeit_llm.cli import main
from gleitzeit_llm.config import InstanceConfig
from gleitzeit_llm.state.redis.keys import Keys, default_namespace
from gleitzeit_llm.testing.redis_server import RedisServer
from langchain_gleitzeit import ChatOllamaPool, OllamaPoolEmbeddings
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
from llama_index.llms.gleitzeit import OllamaPool

INSTANCES = [{"id": "a", "url": "http://127.0.0.1:9"}]
URL = "redis://app:s3cret-pw@127.0.0.1:6390/2"


def _shared(obj: Any) -> Any:
    provider = obj if isinstance(obj, OllamaPoolProvider) else obj.provider
    return provider.manager.config.shared_state


def test_every_way_in_sets_the_shared_state(tmp_path: Path) -> None:
    yaml = tmp_path / "pool.yaml"
    yaml.write_text(f"instances: [http://127.0.0.1:9]\nshared_state: {{url: '{URL}', namespace: chat}}\n")
    env = {"GLEITZEIT_OLLAMA_INSTANCES": "http://127.0.0.1:9", "GLEITZEIT_OLLAMA_SHARED_STATE_URL": URL}
    configs = [
        PoolConfig.from_yaml(yaml).shared_state,
        PoolConfig.from_env({**env, "GLEITZEIT_OLLAMA_SHARED_STATE_NAMESPACE": "chat"}).shared_state,
    ]
    assert [(c.url, c.namespace) for c in configs] == [(URL, "chat"), (URL, "chat")]
    made = [
        OllamaPoolProvider(instances=INSTANCES, shared_state=URL, health_checks=False),
        OllamaPoolManager(instances=INSTANCES, shared_state={"url": URL}, health_checks=False),
        ChatOllamaPool(model="llama3.2", instances=INSTANCES, shared_state=URL, health_checks=False),
        OllamaPoolEmbeddings(
            model="nomic-embed-text", instances=INSTANCES, shared_state=URL, health_checks=False
        ),
        OllamaPool(model="llama3.2", instances=INSTANCES, shared_state=URL),
        OllamaPoolEmbedding(model_name="nomic-embed-text", instances=INSTANCES, shared_state=URL),
    ]
    try:
        for obj in made:
            shared = obj.config.shared_state if isinstance(obj, OllamaPoolManager) else _shared(obj)
            assert shared.url == URL, type(obj).__name__
    finally:
        for obj in made:
            obj.close_sync() if isinstance(obj, (OllamaPoolProvider, OllamaPoolManager)) else obj.close()


def test_without_shared_state_the_redis_client_is_never_imported() -> None:
    code = textwrap.dedent(
        """
        import sys
        from gleitzeit_llm import OllamaPoolProvider
        pool = OllamaPoolProvider(instances=["http://127.0.0.1:9"], health_checks=False)
        pool.close_sync()
        shared = ("redis", "redis.", "gleitzeit_llm.state.redis")
        print(sorted(m for m in sys.modules if m == "redis" or m.startswith(shared[1:])))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_missing_redis_client_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis raises ImportError
    with pytest.raises(ConfigError, match=r"gleitzeit-llm\[redis\]"):
        OllamaPoolProvider(instances=INSTANCES, shared_state=URL, health_checks=False)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("http://app:s3cret-pw@cache:6379", "shared_state.url: 'http://cache:6379' is not a Redis URL"),
        ("redis://", "shared_state.url: the URL names no server"),
        ({"url": URL, "namespace": "a b"}, "shared_state.namespace = 'a b'"),
        ({"url": URL, "timeout": 0}, "shared_state.timeout = 0: must be greater than 0"),
        ({"url": URL, "colour": 1}, "shared_state.colour: unknown field"),
    ],
)
def test_bad_shared_state_names_the_field_and_never_the_password(value: Any, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PoolConfig.from_dict({"instances": INSTANCES, "shared_state": value})
    assert text in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_credentials_never_show_in_repr_status_logs_or_metrics(caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from gleitzeit_llm.observability.prometheus import instrument

    caplog.set_level(logging.DEBUG)
    with RedisServer(password="s3cret-pw") as server:
        wrong = server.url.replace("s3cret-pw", "s3cret-wrong")
        for url in (server.url, wrong):
            manager = OllamaPoolManager(instances=INSTANCES, shared_state=url, health_checks=False)
            registry = CollectorRegistry()
            metrics = instrument(manager, registry)
            try:
                lease = manager.try_acquire(manager.route_request("llama3.2"))
                manager.finish(lease)  # type: ignore[arg-type]
                shown = [
                    repr(manager.config),
                    repr(manager._shared),
                    json.dumps(manager.status()),
                    generate_latest(registry).decode(),
                    caplog.text,
                ]
                assert manager.status()["shared_state"]["up"] is (url == server.url)
            finally:
                metrics.close()
                manager.close_sync()
            assert not [text for text in shown if "s3cret" in text]


def test_every_key_of_a_pool_is_in_one_cluster_slot() -> None:
    keys = Keys(default_namespace([InstanceConfig(url="http://gpu1:11434"), InstanceConfig(url="http://b")]))
    names = [name for i in ("gpu1:11434", "b:11434", "with{brace}") for name in keys.instance(i)]
    names += [keys.channel, keys.key("leader"), keys.key("facts", "ttft")]
    assert len({key_slot(name.encode()) for name in names}) == 1
    assert all(name.startswith(f"gleitzeit:{{{keys.namespace}}}:") for name in names)


def test_the_default_namespace_is_the_instance_set() -> None:
    def ns(*urls: str) -> str:
        return default_namespace([InstanceConfig(url=u) for u in urls])

    assert ns("http://a:1", "http://b:1") == ns("http://b:1", "http://a:1")  # order does not matter
    assert ns("http://a:1") != ns("http://a:1", "http://b:1")
    assert ns("http://u:pw@a:1") == ns("http://a:1")  # credentials are not part of the identity


def test_the_cli_option_shares_state_and_status_says_so(
    ollama_emulators: Any,
    redis_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (emulator,) = ollama_emulators(1, models=["llama3.2"])
    monkeypatch.setenv("GLEITZEIT_OLLAMA_INSTANCES", f"a:{emulator.url}")
    assert main(["--shared-state", redis_server.url, "status", "--json"]) == 0
    shared = json.loads(capsys.readouterr().out)["shared_state"]
    assert (shared["up"], shared["url"]) == (True, redis_server.url)
    assert main(["--shared-state", redis_server.url, "status"]) == 0
    assert f"shared state up ({redis_server.url}" in capsys.readouterr().out
