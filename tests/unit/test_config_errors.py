"""Every bad configuration ends in one ConfigError naming the field, the value and what is allowed."""

from __future__ import annotations

import textwrap
import traceback
from pathlib import Path

import pytest

from gleitzeit_llm.config import CircuitBreakerConfig, InstanceConfig, LoadBalancingStrategy, PoolConfig
from gleitzeit_llm.errors import ConfigError, GleitzeitError

VALID_STRATEGIES = "least_loaded, round_robin, model_affinity, latency_based, weighted, priority, cache_aware"
LB_FIELDS = (
    "strategy, health_check_interval, health_check_timeout, failover, retry_attempts, retry_same_instance, "
    "retry_backoff_base, retry_backoff_max, queue_timeout, affinity_wait, max_retry_after, balance_epsilon, "
    "prefix_weight, prefix_cache_tokens, prefix_fallback, adaptive_concurrency, circuit_breaker"
)


def write(tmp_path: Path, text: str, name: str = "pool.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(build, *args, **kwargs) -> ConfigError:
    """The ConfigError that ``build`` raises, checked to stand alone (no chained pydantic/yaml error)."""
    with pytest.raises(ConfigError) as info:
        build(*args, **kwargs)
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, GleitzeitError)
    assert error.__cause__ is None and error.__context__ is None
    shown = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    assert "ValidationError" not in shown and "YAMLError" not in shown and "ScannerError" not in shown
    return error


def pool(**load_balancing) -> dict:
    return {"instances": [{"id": "a", "url": "http://a:11434"}], "load_balancing": load_balancing}


# -- strategy ------------------------------------------------------------------------------------


def test_unknown_strategy_lists_the_valid_ones():
    error = config_error(PoolConfig.from_dict, pool(strategy="fastest"))
    assert (
        str(error)
        == f"load_balancing.strategy = 'fastest': unknown strategy; valid strategies: {VALID_STRATEGIES}"
    )
    assert (error.field, error.value) == ("load_balancing.strategy", "fastest")
    assert error.hint == f"valid strategies: {VALID_STRATEGIES}"


def test_misspelled_strategy_gets_a_suggestion():
    error = config_error(PoolConfig.from_dict, pool(strategy="leastloaded"))
    assert "did you mean 'least_loaded'?" in str(error)


def test_strategy_of_the_wrong_type_lists_the_valid_ones():
    error = config_error(PoolConfig.from_dict, pool(strategy=3))
    assert "load_balancing.strategy = 3: expected a strategy name" in str(error)
    assert VALID_STRATEGIES in str(error)


def test_strategy_parse_for_per_call_hints_names_the_hint():
    error = config_error(LoadBalancingStrategy.parse, "fast", field="load_balancing_strategy")
    assert str(error).startswith("load_balancing_strategy = 'fast': unknown strategy")
    assert error.field == "load_balancing_strategy"


# -- instances -----------------------------------------------------------------------------------


def test_duplicate_ids_name_both_positions():
    error = config_error(PoolConfig, instances=[{"id": "gpu", "url": "h1"}, "h2", {"id": "gpu", "url": "h3"}])
    assert str(error).startswith("instances[2].id: instances[0] and instances[2] both have id 'gpu'")
    assert "ids must be unique" in str(error)
    assert (error.field, error.value) == ("instances[2].id", "gpu")


def test_duplicate_urls_are_rejected_after_normalisation():
    error = config_error(PoolConfig, instances=["gpu1", {"id": "other", "url": "http://GPU1:11434/"}])
    assert "instances[0] and instances[1] have the same URL 'http://gpu1:11434'" in str(error)
    assert error.field == "instances[1].url"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ht!tp://", "scheme 'ht!tp' is not supported; use http:// or https://"),
        ("ftp://gpu1:11434", "scheme 'ftp' is not supported"),
        ("http://", "the URL has no host"),
        ("http:/gpu1:11434", "the scheme must be followed by '://'"),
        ("http://gpu1:99999", "the port must be a number from 1 to 65535"),
        ("http://gpu1:port", "the port must be a number from 1 to 65535"),
        ("http://exa mple:11434", "invalid host 'exa mple'"),
        ("http://gpu1:11434?x=1", "a query string or fragment is not allowed"),
        ("http://gpu1:11434/api/chat", "give the server's base URL, not an API path"),
        ("   ", "the URL is empty"),
    ],
)
def test_malformed_url_names_the_field_the_value_and_the_fix(url, problem):
    error = config_error(PoolConfig, instances=["http://ok:11434", {"url": url}])
    assert str(error).startswith(f"instances[1].url = {url!r}: ")
    assert problem in str(error)
    assert error.field == "instances[1].url"


def test_instance_constructor_itself_raises_config_error():
    error = config_error(InstanceConfig, url="ht!tp://")
    assert str(error) == "url = 'ht!tp://': scheme 'ht!tp' is not supported; use http:// or https://"


def test_max_concurrent_below_one():
    error = config_error(PoolConfig, instances=[{"url": "h", "max_concurrent": 0}])
    assert str(error) == "instances[0].max_concurrent = 0: must be at least 1"
    assert (error.field, error.value) == ("instances[0].max_concurrent", 0)


@pytest.mark.parametrize("weight", [0, -1.5])
def test_weight_must_be_positive(weight):
    error = config_error(PoolConfig, instances=[{"url": "h", "weight": weight}])
    assert str(error) == f"instances[0].weight = {weight!r}: must be greater than 0"


def test_negative_priority():
    error = config_error(InstanceConfig, url="h", priority=-1)
    assert str(error) == "priority = -1: must be at least 0"


@pytest.mark.parametrize("instances", [[], None, ","])
def test_an_empty_instance_list_is_rejected_with_an_example(instances):
    error = config_error(PoolConfig, instances=instances)
    assert str(error).startswith("instances: at least one instance is required; e.g. instances: [")


def test_missing_instances_are_required():
    error = config_error(PoolConfig.from_dict, {"load_balancing": {}})
    assert str(error) == "instances: required; e.g. instances: [{url: http://localhost:11434}]"


def test_an_instance_without_url():
    error = config_error(PoolConfig, instances=[{"id": "a"}])
    assert str(error).startswith("instances[0].url: required; expected http(s)://host[:port]")


def test_an_instance_that_is_neither_a_mapping_nor_a_string():
    error = config_error(PoolConfig, instances=[42])
    assert str(error).startswith(
        "instances[0] = 42: expected a mapping (url, id, models, ...) or a URL string"
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [(":http://h:1", "the id before ':' is empty"), ("gpu:", "id 'gpu' has no URL after ':'")],
)
def test_malformed_instance_strings(entry, problem):
    error = config_error(PoolConfig, instances=[entry])
    assert str(error).startswith(f"instances[0] = {entry!r}: {problem}")


def test_empty_tag_names_are_rejected_with_their_position():
    error = config_error(InstanceConfig, url="h", tags=["gpu", " "])
    assert str(error).startswith("tags[1] = '': tag names must not be empty")


# -- unknown fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "field", "suggestion"),
    [
        (pool(stratgy="weighted"), "load_balancing.stratgy", "strategy"),
        (pool(circuit_breaker_config={}), "load_balancing.circuit_breaker_config", "circuit_breaker"),
        (
            pool(circuit_breaker={"failure_treshold": 2}),
            "load_balancing.circuit_breaker.failure_treshold",
            "failure_threshold",
        ),
        ({"instances": [{"base_url": "http://h"}]}, "instances[0].base_url", "url"),
        ({"instances": [{"url": "h", "max-concurrent": 2}]}, "instances[0].max-concurrent", "max_concurrent"),
        ({"instances": ["h"], "strategy": "weighted"}, "strategy", "load_balancing.strategy"),
        (
            {"instances": ["h"], "failure_threshold": 2},
            "failure_threshold",
            "load_balancing.circuit_breaker.failure_threshold",
        ),
        ({"instances": ["h"], "timeout": {}}, "timeout", "timeouts"),
        ({"instance": ["h"]}, "instance", "instances"),
    ],
)
def test_unknown_field_suggests_the_closest_valid_name(mapping, field, suggestion):
    error = config_error(PoolConfig.from_dict, mapping)
    assert f"{field}: unknown field; did you mean {suggestion!r}? valid fields here: " in str(error)


def test_unknown_field_lists_the_valid_fields_at_that_level():
    error = config_error(PoolConfig.from_dict, pool(colour="blue"))
    assert str(error) == f"load_balancing.colour: unknown field; valid fields here: {LB_FIELDS}"
    assert error.field == "load_balancing.colour"


# -- wrong types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"instances": [{"url": "h", "max_concurrent": "many"}]},
            "instances[0].max_concurrent = 'many': expected a whole number",
        ),
        (
            {"instances": [{"url": "h", "max_concurrent": 2.5}]},
            "instances[0].max_concurrent = 2.5: expected a whole number",
        ),
        ({"instances": [{"url": "h", "tags": 5}]}, "instances[0].tags = 5: expected a list"),
        ({"instances": [{"url": 11434}]}, "instances[0].url = 11434: expected a string"),
        ({"instances": {"url": "h"}}, "instances = a mapping: expected a list"),
        (
            pool(failover="maybe"),
            "load_balancing.failover = 'maybe': expected true or false; also accepted: yes/no, on/off, 1/0",
        ),
        (pool(retry_attempts=True), "load_balancing.retry_attempts = True: expected a number, not a boolean"),
        (
            pool(health_check_interval="soon"),
            "load_balancing.health_check_interval = 'soon': expected a number of seconds",
        ),
        (
            pool(health_check_interval=float("inf")),
            "load_balancing.health_check_interval = inf: expected a finite number",
        ),
        (pool(circuit_breaker="on"), "load_balancing.circuit_breaker = 'on': expected a mapping"),
        ({"instances": ["h"], "load_balancing": "fast"}, "load_balancing = 'fast': expected a mapping"),
        (
            {"instances": ["h"], "timeouts": {"first_byte": "5m"}},
            "timeouts.first_byte = '5m': expected a number of seconds",
        ),
    ],
)
def test_wrong_types_name_the_field_the_value_and_the_expected_type(mapping, message):
    assert str(config_error(PoolConfig.from_dict, mapping)) == message


def test_a_non_mapping_configuration():
    error = config_error(PoolConfig.from_dict, ["h"])  # type: ignore[arg-type]
    assert "expected a mapping with instances:" in str(error)
    assert str(config_error(PoolConfig.model_validate, "abc")) == "PoolConfig = 'abc': expected a mapping"


def test_all_problems_are_reported_together_in_one_error():
    error = config_error(
        PoolConfig.from_dict,
        {
            "instances": [{"url": "ftp://x", "max_concurrent": 0}],
            "load_balancing": {"strategy": "x", "stratgy": 1},
        },
    )
    lines = str(error).splitlines()
    assert lines[0] == "4 problems in the pool configuration:"
    assert [line.split(" ")[3] for line in lines[1:]] == [
        "instances[0].url",
        "instances[0].max_concurrent",
        "load_balancing.strategy",
        "load_balancing.stratgy:",
    ]
    assert error.field == "instances[0].url"  # the first problem


def test_explicit_open_time_cap_below_recovery_timeout():
    error = config_error(CircuitBreakerConfig, recovery_timeout=120, max_recovery_timeout=60)
    assert str(error).startswith("max_recovery_timeout = 60.0: must be >= recovery_timeout (120)")


def test_explicit_backoff_cap_below_backoff_base():
    error = config_error(PoolConfig.from_dict, pool(retry_backoff_base=1, retry_backoff_max=0.5))
    assert str(error) == "load_balancing.retry_backoff_max = 0.5: must be >= retry_backoff_base (1)"


def test_updates_through_model_copy_are_checked():
    error = config_error(InstanceConfig(url="h").model_copy, update={"weight": 0})
    assert str(error) == "weight = 0: must be greater than 0"


# -- YAML files ----------------------------------------------------------------------------------


def test_missing_yaml_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "pool.yaml"
    error = config_error(PoolConfig.from_yaml, missing)
    assert str(error) == f"configuration file not found: {missing}"
    assert error.value == str(missing)


def test_a_url_passed_as_a_file_gets_a_hint():
    error = config_error(PoolConfig.load, "http://localhost:11434")
    assert "looks like a URL, not a file" in str(error.hint)


def test_a_directory_is_not_a_yaml_file(tmp_path):
    assert f"cannot read configuration file {tmp_path}" in str(config_error(PoolConfig.from_yaml, tmp_path))


def test_malformed_yaml_gives_line_and_column(tmp_path):
    path = write(
        tmp_path, "instances:\n  - id: a\n    url: [http://a:11434\nload_balancing:\n  strategy: x\n"
    )
    error = config_error(PoolConfig.from_yaml, path)
    assert str(error).startswith(f"{path}, line 4, column 15: malformed YAML: ")
    assert "(while parsing a flow sequence at line 3)" in str(error)


def test_badly_indented_yaml_gives_the_line(tmp_path):
    path = write(tmp_path, "instances:\n  - id: a\n url: x\n")
    assert str(config_error(PoolConfig.from_yaml, path)).startswith(
        f"{path}, line 3, column 2: malformed YAML"
    )


def test_empty_yaml_file(tmp_path):
    path = write(tmp_path, "# nothing yet\n")
    assert str(config_error(PoolConfig.from_yaml, path)) == f"{path} is empty"


def test_yaml_validation_errors_point_at_the_file_and_line(tmp_path):
    path = write(
        tmp_path,
        """\
        instances:
          - id: a
            url: http://a:11434
          - id: b
            url: "ht!tp://b"
            max_concurrent: 0
        load_balancing:
          stratgy: fast
        """,
    )
    error = config_error(PoolConfig.from_yaml, path)
    assert str(error).splitlines() == [
        f"3 problems in {path}:",
        "  - line 5: instances[1].url = 'ht!tp://b': scheme 'ht!tp' is not supported; use http:// or https://",
        "  - line 6: instances[1].max_concurrent = 0: must be at least 1",
        "  - line 8: load_balancing.stratgy: unknown field; did you mean 'strategy'? "
        f"valid fields here: {LB_FIELDS}",
    ]


def test_workflow_errors_carry_the_providers_path(tmp_path):
    path = write(
        tmp_path,
        """\
        providers:
          ollama:
            type: ollama_pool
            instances:
              - id: gpu-1
                url: http://gpu1:11434
                weight: -1
        """,
    )
    error = config_error(PoolConfig.from_yaml, path)
    assert str(error) == f"{path}, line 7: providers.ollama.instances[0].weight = -1: must be greater than 0"
    assert error.field == "providers.ollama.instances[0].weight"


def test_a_pool_section_with_another_type_is_rejected():
    error = config_error(PoolConfig.from_dict, {"type": "ollama", "instances": ["h"]})
    assert "type = 'ollama': this pool's type must be ollama_pool" in str(error)


# -- secrets stay out of errors ------------------------------------------------------------------


SECRET = "Bearer s3cr3t-t0ken"


@pytest.mark.parametrize(
    "instance",
    [
        {"url": "h", "headers": {"Authorization": ["Bearer", "s3cr3t-t0ken"]}},  # wrong type
        {"url": "h", "headers": {"Bad Name": SECRET}},  # invalid header name
        {"url": "h", "headers": {"Authorization": SECRET, "authorization": SECRET}},  # given twice
        {"url": "h", "headers": {"X": "Bearer\ns3cr3t-t0ken"}},  # header injection
        {"url": "h", "header": {"Authorization": SECRET}},  # misspelled field
        {"url": "ftp://h", "headers": {"Authorization": SECRET}},  # another field is wrong
        {"id": "a", "headers": {"Authorization": SECRET}},  # url missing
        {"url": "h", "headers": SECRET},  # not a mapping
    ],
)
def test_header_values_never_appear_in_error_messages(instance):
    error = config_error(PoolConfig, instances=[instance])
    assert (
        "s3cr3t" not in str(error) and "s3cr3t" not in repr(error.value) and "s3cr3t" not in str(error.hint)
    )


def test_the_error_value_of_a_mistyped_section_is_a_summary_not_its_contents():
    error = config_error(PoolConfig, instances={"url": "h", "headers": {"Authorization": SECRET}})
    assert str(error) == "instances = a mapping: expected a list"
    assert error.value == "a mapping"


def test_broken_json_is_not_echoed():
    text = '{"instances": [{"url": "h", "headers": {"Authorization": "Bearer s3cr3t-t0ken"}}'
    error = config_error(PoolConfig.model_validate_json, text)
    assert str(error).startswith("PoolConfig: invalid JSON: EOF while parsing")
    assert "s3cr3t" not in str(error) and error.value is None


def test_a_header_error_names_the_header_but_masks_its_value():
    error = config_error(InstanceConfig, url="h", headers={"Authorization": 5.5j})
    assert str(error) == "headers['Authorization'] = '***': expected a string"
    assert error.value == "***"


def test_url_passwords_are_masked_in_errors():
    error = config_error(PoolConfig, instances=["http://bob:hunter2@h:1", "http://bob:hunter2@h:1"])
    # The one redaction rule (ollama/urls.py): the whole user:pass@ goes, as in status and logs.
    assert "hunter2" not in str(error) and "bob" not in str(error) and "'http://h:1'" in str(error)
    error = config_error(InstanceConfig, url="http://bob:hunter2@h:1/api")
    assert "hunter2" not in str(error) and "hunter2" not in str(error.value)


def test_a_frozen_field_error_is_a_config_error_too():
    error = config_error(setattr, InstanceConfig(url="h", headers={"A": SECRET}), "headers", {})
    assert "s3cr3t" not in str(error)
    assert error.field == "headers"
