"""PoolConfig.from_env: the GLEITZEIT_OLLAMA_* variables, their parsing rules, and their errors."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from gleitzeit_llm.config import ENV_VARIABLES, LoadBalancingStrategy, PoolConfig
from gleitzeit_llm.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "pool.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def env_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        PoolConfig.from_env(environ)
    assert info.value.__context__ is None
    return info.value


def test_the_guides_environment_example():
    cfg = PoolConfig.from_env(
        {
            "GLEITZEIT_OLLAMA_INSTANCES": "local:http://localhost:11434,gpu:http://gpu:11434",
            "GLEITZEIT_OLLAMA_STRATEGY": "least_loaded",
            "GLEITZEIT_OLLAMA_HEALTH_CHECK_INTERVAL": "30",
            "GLEITZEIT_OLLAMA_FAILOVER": "true",
        }
    )
    assert [(i.id, i.url) for i in cfg.instances] == [
        ("local", "http://localhost:11434"),
        ("gpu", "http://gpu:11434"),
    ]
    assert cfg.load_balancing.strategy is LoadBalancingStrategy.LEAST_LOADED
    assert cfg.load_balancing.health_check_interval == 30.0
    assert cfg.load_balancing.failover is True


def test_instance_entries_may_be_id_url_url_id_host_port_or_host_port():
    cfg = PoolConfig.from_env(
        {
            "GLEITZEIT_OLLAMA_INSTANCES": "local:http://localhost:11434, http://localhost:11435 "
            "gpu:gpu1:11434\nbox:11436"
        }
    )
    assert [(i.id, i.url) for i in cfg.instances] == [
        ("local", "http://localhost:11434"),
        ("localhost:11435", "http://localhost:11435"),
        ("gpu", "http://gpu1:11434"),
        ("box:11436", "http://box:11436"),
    ]


def test_without_instances_or_config_file_the_pool_is_the_local_server():
    cfg = PoolConfig.from_env({})
    assert [(i.id, i.url) for i in cfg.instances] == [("localhost:11434", "http://localhost:11434")]


def test_empty_variables_count_as_unset():
    cfg = PoolConfig.from_env({"GLEITZEIT_OLLAMA_INSTANCES": "", "GLEITZEIT_OLLAMA_STRATEGY": "  "})
    assert cfg == PoolConfig.from_env({})


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("on", True),
        ("off", False),
        ("TRUE", True),
        ("Off", False),
    ],
)
def test_failover_accepts_the_usual_boolean_words(word, value):
    assert PoolConfig.from_env({"GLEITZEIT_OLLAMA_FAILOVER": word}).load_balancing.failover is value


def test_every_numeric_setting_has_a_variable():
    cfg = PoolConfig.from_env(
        {
            "GLEITZEIT_OLLAMA_STRATEGY": "Model-Affinity",
            "GLEITZEIT_OLLAMA_HEALTH_CHECK_TIMEOUT": "2.5",
            "GLEITZEIT_OLLAMA_RETRY_ATTEMPTS": "5",
            "GLEITZEIT_OLLAMA_RETRY_BACKOFF_BASE": "0.1",
            "GLEITZEIT_OLLAMA_RETRY_BACKOFF_MAX": "4",
            "GLEITZEIT_OLLAMA_QUEUE_TIMEOUT": "0",
            "GLEITZEIT_OLLAMA_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "2",
            "GLEITZEIT_OLLAMA_CIRCUIT_BREAKER_RECOVERY_TIMEOUT": "30",
            "GLEITZEIT_OLLAMA_CIRCUIT_BREAKER_HALF_OPEN_REQUESTS": "1",
            "GLEITZEIT_OLLAMA_CIRCUIT_BREAKER_MAX_RECOVERY_TIMEOUT": "600",
            "GLEITZEIT_OLLAMA_TIMEOUT_CONNECT": "1",
            "GLEITZEIT_OLLAMA_TIMEOUT_FIRST_BYTE": "600",
            "GLEITZEIT_OLLAMA_TIMEOUT_IDLE": "30",
            "GLEITZEIT_OLLAMA_TIMEOUT_TOTAL": "3600",
        }
    )
    lb, cb, t = cfg.load_balancing, cfg.load_balancing.circuit_breaker, cfg.timeouts
    assert lb.strategy is LoadBalancingStrategy.MODEL_AFFINITY
    assert (lb.health_check_timeout, lb.retry_attempts, lb.queue_timeout) == (2.5, 5, 0.0)
    assert (lb.retry_backoff_base, lb.retry_backoff_max) == (0.1, 4.0)
    assert (cb.failure_threshold, cb.recovery_timeout, cb.half_open_requests, cb.max_recovery_timeout) == (
        2,
        30.0,
        1,
        600.0,
    )
    assert (t.connect, t.first_byte, t.idle, t.total) == (1.0, 600.0, 30.0, 3600.0)


def test_a_timeout_variable_can_switch_the_limit_off():
    assert PoolConfig.from_env({"GLEITZEIT_OLLAMA_TIMEOUT_IDLE": "none"}).timeouts.idle is None


def test_the_variable_table_maps_every_variable_to_its_field():
    assert ENV_VARIABLES["GLEITZEIT_OLLAMA_STRATEGY"] == ("load_balancing", "strategy")
    assert ENV_VARIABLES["GLEITZEIT_OLLAMA_INSTANCES"] == ("instances",)
    assert ENV_VARIABLES["GLEITZEIT_OLLAMA_CIRCUIT_BREAKER_RECOVERY_TIMEOUT"] == (
        "load_balancing",
        "circuit_breaker",
        "recovery_timeout",
    )
    assert ENV_VARIABLES["GLEITZEIT_OLLAMA_TIMEOUT_FIRST_BYTE"] == ("timeouts", "first_byte")
    assert ENV_VARIABLES["GLEITZEIT_OLLAMA_MAX_RETRY_AFTER"] == ("load_balancing", "max_retry_after")
    assert ENV_VARIABLES["GLEITZEIT_OLLAMA_SHARED_STATE_URL"] == ("shared_state", "url")
    assert ENV_VARIABLES["GLEITZEIT_OLLAMA_SHARED_STATE_NAMESPACE"] == ("shared_state", "namespace")
    assert ENV_VARIABLES["GLEITZEIT_OLLAMA_SHARED_STATE_CLUSTER"] == ("shared_state", "cluster")
    assert ENV_VARIABLES["GLEITZEIT_OLLAMA_ADAPTIVE_CONCURRENCY"] == (
        "load_balancing",
        "adaptive_concurrency",
    )
    assert len(ENV_VARIABLES) == 35


def test_docs_list_every_variable():
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert [name for name in ENV_VARIABLES if f"`{name}`" not in doc] == []


# -- the YAML file, and variables overriding it --------------------------------------------------


def test_config_file_is_read_first_and_variables_override_it(tmp_path):
    path = write(
        tmp_path,
        """
        instances:
          - {id: a, url: "http://a:11434", max_concurrent: 8}
          - {id: b, url: "http://b:11434"}
        load_balancing:
          strategy: weighted
          retry_attempts: 1
          circuit_breaker: {failure_threshold: 9}
        """,
    )
    cfg = PoolConfig.from_env(
        {
            "GLEITZEIT_OLLAMA_CONFIG": str(path),
            "GLEITZEIT_OLLAMA_STRATEGY": "priority",
            "GLEITZEIT_OLLAMA_CIRCUIT_BREAKER_RECOVERY_TIMEOUT": "10",
        }
    )
    assert [i.id for i in cfg.instances] == ["a", "b"]
    assert cfg.load_balancing.strategy is LoadBalancingStrategy.PRIORITY  # overridden
    assert cfg.load_balancing.retry_attempts == 1  # from the file
    assert cfg.load_balancing.circuit_breaker.failure_threshold == 9  # from the file, beside the override
    assert cfg.load_balancing.circuit_breaker.recovery_timeout == 10


def test_instances_variable_replaces_the_files_instances(tmp_path):
    path = write(tmp_path, "instances: ['http://a:11434', 'http://b:11434']\n")
    cfg = PoolConfig.from_env({"GLEITZEIT_OLLAMA_CONFIG": str(path), "GLEITZEIT_OLLAMA_INSTANCES": "c:11434"})
    assert [i.id for i in cfg.instances] == ["c:11434"]


def test_max_concurrent_variable_is_the_default_for_instances_that_set_none(tmp_path):
    path = write(tmp_path, "instances: [{url: 'http://a:11434', max_concurrent: 8}, 'b:11434']\n")
    cfg = PoolConfig.from_env({"GLEITZEIT_OLLAMA_CONFIG": str(path), "GLEITZEIT_OLLAMA_MAX_CONCURRENT": "2"})
    assert [i.max_concurrent for i in cfg.instances] == [8, 2]


def test_config_file_may_be_a_workflow_file(tmp_path):
    path = write(
        tmp_path, "providers:\n  ollama:\n    type: ollama_pool\n    instances: ['gpu:gpu1:11434']\n"
    )
    cfg = PoolConfig.from_env({"GLEITZEIT_OLLAMA_CONFIG": str(path), "GLEITZEIT_OLLAMA_FAILOVER": "off"})
    assert cfg.instances[0].id == "gpu"
    assert cfg.load_balancing.failover is False


def test_from_env_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("GLEITZEIT_OLLAMA_INSTANCES", "x:http://x:1")
    assert PoolConfig.from_env().instances[0].id == "x"


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "GLEITZEIT_OLLAMA_HEALTH_CHECK_INTERVAL",
            "soon",
            "GLEITZEIT_OLLAMA_HEALTH_CHECK_INTERVAL (load_balancing.health_check_interval) = 'soon': "
            "expected a number of seconds",
        ),
        (
            "GLEITZEIT_OLLAMA_FAILOVER",
            "maybe",
            "GLEITZEIT_OLLAMA_FAILOVER (load_balancing.failover) = 'maybe': expected true or false; "
            "also accepted: yes/no, on/off, 1/0",
        ),
        (
            "GLEITZEIT_OLLAMA_RETRY_ATTEMPTS",
            "-1",
            "GLEITZEIT_OLLAMA_RETRY_ATTEMPTS (load_balancing.retry_attempts) = '-1': must be at least 0",
        ),
        (
            "GLEITZEIT_OLLAMA_RETRY_ATTEMPTS",
            "three",
            "GLEITZEIT_OLLAMA_RETRY_ATTEMPTS (load_balancing.retry_attempts) = 'three': "
            "expected a whole number",
        ),
        (
            "GLEITZEIT_OLLAMA_STRATEGY",
            "fastest",
            "GLEITZEIT_OLLAMA_STRATEGY (load_balancing.strategy) = 'fastest': unknown strategy; "
            "valid strategies: least_loaded, round_robin, model_affinity, latency_based, weighted, priority, "
            "cache_aware",
        ),
        (
            "GLEITZEIT_OLLAMA_TIMEOUT_TOTAL",
            "1h",
            "GLEITZEIT_OLLAMA_TIMEOUT_TOTAL (timeouts.total) = '1h': expected a number of seconds",
        ),
    ],
)
def test_an_unparsable_variable_is_named_with_its_value(var, value, message):
    error = env_error({var: value})
    assert str(error) == message
    assert error.field == var


def test_a_bad_instance_entry_names_the_variable_and_the_entry():
    error = env_error({"GLEITZEIT_OLLAMA_INSTANCES": "local:http://localhost:11434,gpu:ht!tp://gpu1:11434"})
    assert str(error) == (
        "GLEITZEIT_OLLAMA_INSTANCES entry 2 (instances[1].url) = 'ht!tp://gpu1:11434': "
        "scheme 'ht!tp' is not supported; use http:// or https://"
    )
    assert error.field == "GLEITZEIT_OLLAMA_INSTANCES"


def test_an_entry_with_an_empty_id_names_the_variable():
    error = env_error({"GLEITZEIT_OLLAMA_INSTANCES": ":http://h:1"})
    assert str(error).startswith(
        "GLEITZEIT_OLLAMA_INSTANCES entry 1 (instances[0]) = ':http://h:1': the id before"
    )


def test_duplicate_ids_in_the_variable_name_both_entries():
    error = env_error({"GLEITZEIT_OLLAMA_INSTANCES": "a:h1,a:h2"})
    assert (
        "GLEITZEIT_OLLAMA_INSTANCES entry 2 (instances[1].id): instances[0] and instances[1] both have id 'a'"
        in str(error)
    )


def test_a_list_of_only_separators_is_an_empty_instance_list():
    error = env_error({"GLEITZEIT_OLLAMA_INSTANCES": " , ,"})
    assert str(error).startswith("GLEITZEIT_OLLAMA_INSTANCES (instances): at least one instance is required")


def test_a_bad_max_concurrent_variable_is_named():
    error = env_error({"GLEITZEIT_OLLAMA_INSTANCES": "h", "GLEITZEIT_OLLAMA_MAX_CONCURRENT": "0"})
    assert (
        str(error)
        == "GLEITZEIT_OLLAMA_MAX_CONCURRENT (instances[0].max_concurrent) = '0': must be at least 1"
    )


def test_a_missing_config_file_names_the_variable_and_the_path(tmp_path):
    missing = tmp_path / "pool.yaml"
    error = env_error({"GLEITZEIT_OLLAMA_CONFIG": str(missing)})
    assert str(error) == f"GLEITZEIT_OLLAMA_CONFIG: configuration file not found: {missing}"
    assert (error.field, error.value) == ("GLEITZEIT_OLLAMA_CONFIG", str(missing))


def test_a_malformed_config_file_names_the_variable_and_the_line(tmp_path):
    path = write(tmp_path, "instances:\n  - url: 'http://a\n")
    error = env_error({"GLEITZEIT_OLLAMA_CONFIG": str(path)})
    assert str(error).startswith(f"GLEITZEIT_OLLAMA_CONFIG: {path}, line ")
    assert "malformed YAML" in str(error)


def test_errors_from_the_file_and_the_variables_are_told_apart(tmp_path):
    path = write(tmp_path, "instances:\n  - url: 'http://a:1'\n    weight: 0\n")
    error = env_error({"GLEITZEIT_OLLAMA_CONFIG": str(path), "GLEITZEIT_OLLAMA_STRATEGY": "nope"})
    assert str(error).splitlines()[:3] == [
        f"2 problems in {path} (from GLEITZEIT_OLLAMA_CONFIG):",
        "  - line 3: instances[0].weight = 0: must be greater than 0",
        "  - GLEITZEIT_OLLAMA_STRATEGY (load_balancing.strategy) = 'nope': unknown strategy; "
        "valid strategies: least_loaded, round_robin, model_affinity, latency_based, weighted, priority, "
        "cache_aware",
    ]


def test_an_unknown_variable_is_ignored_with_a_warning_that_suggests_the_right_name(caplog):
    with caplog.at_level(logging.WARNING, logger="gleitzeit_llm.config"):
        cfg = PoolConfig.from_env({"GLEITZEIT_OLLAMA_STRATAGY": "weighted"})
    assert cfg.load_balancing.strategy is LoadBalancingStrategy.LEAST_LOADED
    assert (
        "ignoring unknown environment variable GLEITZEIT_OLLAMA_STRATAGY; "
        "did you mean GLEITZEIT_OLLAMA_STRATEGY?" in caplog.text
    )
