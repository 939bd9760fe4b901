"""The suite's own redis-server: found without setup, empty after a restart, killable."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gleitzeit_llm.testing.redis_server import RedisServer, RedisServerUnavailable, find_redis_server


def test_a_binary_is_found_without_setup() -> None:
    path = find_redis_server()
    assert path.endswith(("redis-server", "valkey-server"))


def test_the_server_answers_and_comes_back_empty_after_a_restart(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    port = redis_server.port
    redis_server.restart()
    assert redis_server.port == port
    assert client.get("k") is None  # redis-py reconnects; nothing was persisted
    client.close()


def test_a_killed_server_refuses_connections(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    assert client.ping()
    redis_server.kill()
    assert not redis_server.running
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()


def test_a_password_is_required_and_carried_by_the_url() -> None:
    with RedisServer(password="s3cret") as server:
        assert ":s3cret@127.0.0.1" in server.url
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
        # No retries: redis-py's default retries an auth failure with backoff for seconds.
        no_retry = Retry(NoBackoff(), 0)
        anonymous = redis.Redis(host="127.0.0.1", port=server.port, retry=no_retry)
        with anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()


def test_a_server_that_cannot_start_says_why_and_leaves_nothing_behind() -> None:
    with pytest.raises(RedisServerUnavailable, match="exited"):
        RedisServer(executable="/bin/false", startup_timeout=2).start()
