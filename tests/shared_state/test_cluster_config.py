"""``shared_state.cluster``: every way in sets it, and a URL a cluster cannot serve is a clear
error naming the field (no cluster needed for these)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from gleitzeit_llm import ConfigError, OllamaPoolProvider, PoolConfig
from gleitzeit_llm.state.redis.cluster import ClusterClient, DeferredPipeline
from gleitzeit_llm.state.redis.connection import build_client

ENV = {
    "GLEITZEIT_OLLAMA_INSTANCES": "http://127.0.0.1:9",
    "GLEITZEIT_OLLAMA_SHARED_STATE_URL": "redis://node:7000",
}


def test_every_way_in_sets_cluster(tmp_path: Path) -> None:
    yaml = tmp_path / "pool.yaml"
    yaml.write_text(
        "instances: [http://127.0.0.1:9]\nshared_state: {url: 'redis://node:7000', cluster: true}\n"
    )
    pool = OllamaPoolProvider(
        instances=["http://127.0.0.1:9"],
        shared_state={"url": "redis://node:7000", "cluster": True},
        health_checks=False,
    )
    try:
        configs = [
            PoolConfig.from_yaml(yaml).shared_state,
            PoolConfig.from_env({**ENV, "GLEITZEIT_OLLAMA_SHARED_STATE_CLUSTER": "true"}).shared_state,
            pool.manager.config.shared_state,
        ]
        assert [c.cluster for c in configs] == [True, True, True]
        # Built without a connection (nothing listens on node:7000): the pool exists.
        assert isinstance(pool.manager._shared.client, ClusterClient)
    finally:
        pool.close_sync()
    assert PoolConfig.from_env(ENV).shared_state.cluster is False  # the default: one server


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("unix:///run/redis.sock", "over TCP, not a unix:// socket"),
        ("redis://node:7000/2", "only database 0, the URL selects '2'"),
        ("redis://node:7000?db=1", "only database 0, the URL selects '1'"),
    ],
)
def test_a_url_no_cluster_can_serve_names_the_field(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        PoolConfig.from_env(
            {**ENV, "GLEITZEIT_OLLAMA_SHARED_STATE_URL": url, "GLEITZEIT_OLLAMA_SHARED_STATE_CLUSTER": "1"}
        )
    assert "GLEITZEIT_OLLAMA_SHARED_STATE_URL (shared_state.url)" in str(caught.value)


def test_a_cluster_flag_that_is_no_boolean_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"GLEITZEIT_OLLAMA_SHARED_STATE_CLUSTER \(shared_state.cluster\)"):
        PoolConfig.from_env({**ENV, "GLEITZEIT_OLLAMA_SHARED_STATE_CLUSTER": "maybe"})


def test_database_zero_is_fine_and_credentials_never_show() -> None:
    env = {**ENV, "GLEITZEIT_OLLAMA_SHARED_STATE_URL": "rediss://app:s3cret@node:7000/0"}
    config = PoolConfig.from_env({**env, "GLEITZEIT_OLLAMA_SHARED_STATE_CLUSTER": "yes"}).shared_state
    assert config.cluster is True
    assert "s3cret" not in repr(config)


def test_before_its_first_connection_the_client_queues_pipelines_without_connecting() -> None:
    config = PoolConfig.from_env({**ENV, "GLEITZEIT_OLLAMA_SHARED_STATE_CLUSTER": "true"}).shared_state
    built: list[int] = []

    def no_node() -> None:
        built.append(1)
        raise ConnectionError("no node answers")

    client = build_client(config, slot_key="gleitzeit:{ns}:leader")
    assert isinstance(client, ClusterClient)
    client._factory = no_node
    pipe = client.pipeline(transaction=False)
    assert isinstance(pipe, DeferredPipeline)
    pipe.hset("gleitzeit:{ns}:x", "f", "v")
    pipe.hgetall("gleitzeit:{ns}:x")
    assert (len(pipe), built) == (2, [])  # queued, nothing sent
    with pytest.raises(ConnectionError):
        pipe.execute(raise_on_error=False)  # the store's link error: local state
    assert built == [1]
    client.close()  # never built: nothing to close
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        client.ping()  # and never built after close (a thread still finishing)
    assert built == [1]
