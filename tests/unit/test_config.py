"""PoolConfig: the guide's dict, YAML and workflow forms, defaults, normalisation, immutability, load()."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gleitzeit_llm.config import (
    CircuitBreakerConfig,
    InstanceConfig,
    LoadBalancingConfig,
    LoadBalancingStrategy,
    PoolConfig,
    TimeoutConfig,
)
from gleitzeit_llm.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "pool.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# The guide's YAML, verbatim (Configuration section: Instance + Load Balancing Configuration).
GUIDE_YAML = """
instances:
  - id: "gpu-server-1"           # Unique identifier
    url: "http://gpu1:11434"     # Ollama API endpoint
    models:                       # Models available on this instance
      - "llama3.2:70b"
      - "mixtral:8x7b"
    max_concurrent: 2             # Max parallel requests
    tags:                         # Tags for filtering
      - "gpu"
      - "high-memory"
      - "production"
    priority: 1                   # Priority for selection (lower = higher priority)
    weight: 2.0                   # Weight for weighted selection
    specialization: "large-models" # Optional specialization

load_balancing:
  strategy: "least_loaded"        # Default strategy
  health_check_interval: 30       # Seconds between health checks
  failover: true                  # Enable automatic failover
  retry_attempts: 3               # Max retry attempts on failure

  circuit_breaker:
    failure_threshold: 5          # Failures before opening circuit
    recovery_timeout: 60          # Seconds before attempting recovery
    half_open_requests: 3         # Test requests in half-open state
"""

GUIDE_DICT = {
    "instances": [
        {
            "id": "gpu-server-1",
            "url": "http://gpu1:11434",
            "models": ["llama3.2:70b", "mixtral:8x7b"],
            "max_concurrent": 2,
            "tags": ["gpu", "high-memory", "production"],
            "priority": 1,
            "weight": 2.0,
            "specialization": "large-models",
        }
    ],
    "load_balancing": {
        "strategy": "least_loaded",
        "health_check_interval": 30,
        "failover": True,
        "retry_attempts": 3,
        "circuit_breaker": {"failure_threshold": 5, "recovery_timeout": 60, "half_open_requests": 3},
    },
}

# The guide's workflow file (Workflow Integration section), tasks shortened.
GUIDE_WORKFLOW = """
name: "Multi-Instance Workflow"

# Global provider configuration
providers:
  ollama:
    type: "ollama_pool"
    instances:
      - id: "cpu-1"
        url: "http://localhost:11434"
        models: ["llama3.2", "phi"]
        tags: ["cpu", "fast"]

      - id: "gpu-1"
        url: "http://gpu1:11434"
        models: ["llama3.2:70b", "mixtral"]
        tags: ["gpu", "large"]

tasks:
  - name: "Quick Analysis"
    protocol: "llm/v1"
    method: "llm/chat"
    params:
      model: "llama3.2"
      messages:
        - role: "user"
          content: "Analyze this quickly"
"""


# -- defaults -------------------------------------------------------------------------------------


def test_load_balancing_defaults_are_the_guides():
    lb = LoadBalancingConfig()
    assert lb.strategy is LoadBalancingStrategy.LEAST_LOADED
    assert lb.health_check_interval == 30
    assert lb.failover is True
    assert lb.retry_attempts == 3
    assert (lb.health_check_timeout, lb.queue_timeout) == (5.0, 60.0)
    assert (lb.retry_backoff_base, lb.retry_backoff_max) == (0.05, 2.0)


def test_circuit_breaker_defaults_are_the_guides_with_a_capped_growing_open_time():
    cb = CircuitBreakerConfig()
    assert (cb.failure_threshold, cb.recovery_timeout, cb.half_open_requests) == (5, 60, 3)
    assert cb.max_recovery_timeout == 300


def test_timeouts_cover_a_cold_model_load_and_never_limit_a_whole_generation():
    t = TimeoutConfig()
    assert (t.connect, t.first_byte, t.idle, t.total) == (5.0, 300.0, 120.0, None)


def test_instance_defaults():
    inst = InstanceConfig(url="http://localhost:11434")
    assert inst.id == "localhost:11434"
    assert inst.models == [] and inst.tags == [] and inst.headers == {}
    assert (inst.max_concurrent, inst.priority, inst.weight, inst.specialization) == (4, 1, 1.0, None)


def test_a_pool_needs_only_its_instances():
    cfg = PoolConfig(instances=[{"url": "http://localhost:11434"}])
    assert cfg.load_balancing == LoadBalancingConfig()
    assert cfg.timeouts == TimeoutConfig()


# -- the guide's forms --------------------------------------------------------------------------


def test_guide_quick_start_instances_parse_as_given():
    cfg = PoolConfig(
        instances=[
            {
                "id": "primary",
                "url": "http://localhost:11434",
                "models": ["llama3.2", "codellama"],
                "max_concurrent": 5,
            },
            {
                "id": "secondary",
                "url": "http://localhost:11435",
                "models": ["llama3.2", "mistral"],
                "max_concurrent": 5,
            },
        ]
    )
    assert [i.id for i in cfg.instances] == ["primary", "secondary"]
    assert cfg.instances[1].url == "http://localhost:11435"
    assert cfg.instances[0].models == ["llama3.2", "codellama"]
    assert cfg.instances[0].max_concurrent == 5


def test_guide_client_ollama_config_parses_the_same_through_every_constructor():
    ollama_config = {
        "instances": [
            {"id": "local", "url": "http://localhost:11434"},
            {"id": "remote", "url": "http://remote:11434"},
        ],
        "load_balancing": {"strategy": "least_loaded", "failover": True},
    }
    via_dict = PoolConfig.from_dict(ollama_config)
    assert via_dict == PoolConfig(**ollama_config) == PoolConfig.model_validate(ollama_config)
    assert via_dict == PoolConfig.load(ollama_config)
    assert [i.url for i in via_dict.instances] == ["http://localhost:11434", "http://remote:11434"]


def test_guide_tuning_examples_parse():
    reliability = {
        "instances": ["http://localhost:11434"],
        "load_balancing": {
            "strategy": "least_loaded",
            "failover": True,
            "retry_attempts": 5,
            "circuit_breaker": {"failure_threshold": 2, "recovery_timeout": 120},
        },
    }
    cfg = PoolConfig.from_dict(reliability)
    assert cfg.load_balancing.retry_attempts == 5
    assert cfg.load_balancing.circuit_breaker.failure_threshold == 2
    latency = PoolConfig.from_dict(
        {"instances": ["h:1"], "load_balancing": {"strategy": "latency_based", "health_check_interval": 10}}
    )
    assert latency.load_balancing.strategy is LoadBalancingStrategy.LATENCY_BASED


def test_guide_yaml_parses_to_the_same_config_as_the_guide_dict(tmp_path):
    from_yaml = PoolConfig.from_yaml(write(tmp_path, GUIDE_YAML))
    assert from_yaml == PoolConfig.from_dict(GUIDE_DICT)
    inst = from_yaml.instances[0]
    assert inst.tags == ["gpu", "high-memory", "production"]
    assert (inst.weight, inst.priority, inst.specialization) == (2.0, 1, "large-models")


def test_dict_yaml_and_environment_forms_of_the_guide_give_the_same_config(tmp_path):
    env = {
        "GLEITZEIT_OLLAMA_INSTANCES": "local:http://localhost:11434,gpu:http://gpu:11434",
        "GLEITZEIT_OLLAMA_STRATEGY": "least_loaded",
        "GLEITZEIT_OLLAMA_HEALTH_CHECK_INTERVAL": "30",
        "GLEITZEIT_OLLAMA_FAILOVER": "true",
    }
    mapping = {
        "instances": [
            {"id": "local", "url": "http://localhost:11434"},
            {"id": "gpu", "url": "http://gpu:11434"},
        ],
        "load_balancing": {"strategy": "least_loaded", "health_check_interval": 30, "failover": True},
    }
    yaml_file = write(
        tmp_path,
        """
        instances:
          - {id: local, url: "http://localhost:11434"}
          - {id: gpu, url: "http://gpu:11434"}
        load_balancing:
          strategy: least_loaded
          health_check_interval: 30
          failover: true
        """,
    )
    assert PoolConfig.from_env(env) == PoolConfig.from_dict(mapping) == PoolConfig.from_yaml(yaml_file)


def test_workflow_file_pool_under_providers_is_found_by_its_type(tmp_path):
    cfg = PoolConfig.from_yaml(write(tmp_path, GUIDE_WORKFLOW))
    assert [i.id for i in cfg.instances] == ["cpu-1", "gpu-1"]
    assert cfg.instances[1].tags == ["gpu", "large"]
    assert cfg.instances[0].models == ["llama3.2", "phi"]


def test_workflow_mapping_works_with_from_dict_too():
    workflow = {"providers": {"ollama": {"type": "ollama_pool", "instances": ["http://localhost:11434"]}}}
    assert PoolConfig.from_dict(workflow).instances[0].id == "localhost:11434"


def test_workflow_with_several_pools_takes_the_one_named_by_provider(tmp_path):
    path = write(
        tmp_path,
        """
        providers:
          small: {type: ollama_pool, instances: ["cpu1:11434"]}
          big: {type: ollama_pool, instances: ["gpu1:11434"], load_balancing: {strategy: priority}}
          other: {type: openai}
        """,
    )
    cfg = PoolConfig.from_yaml(path, provider="big")
    assert cfg.instances[0].url == "http://gpu1:11434"
    assert cfg.load_balancing.strategy is LoadBalancingStrategy.PRIORITY
    with pytest.raises(ConfigError, match=r"several ollama_pool providers \(small, big\).*provider="):
        PoolConfig.from_yaml(path)


def test_workflow_without_an_ollama_pool_provider_says_what_it_found(tmp_path):
    path = write(tmp_path, "providers:\n  ollama: {type: ollama, url: 'http://x'}\n")
    with pytest.raises(ConfigError, match=r"no provider with type: ollama_pool.*ollama \(type 'ollama'\)"):
        PoolConfig.from_yaml(path)


def test_workflow_provider_name_that_does_not_exist_lists_the_names(tmp_path):
    path = write(tmp_path, GUIDE_WORKFLOW)
    with pytest.raises(ConfigError, match=r"no provider named 'gpu' under providers \(found: ollama\)"):
        PoolConfig.from_yaml(path, provider="gpu")


def test_empty_sections_mean_their_defaults(tmp_path):
    path = write(tmp_path, "instances: ['http://localhost:11434']\nload_balancing:\ntimeouts:\n")
    cfg = PoolConfig.from_yaml(path)
    assert cfg.load_balancing == LoadBalancingConfig() and cfg.timeouts == TimeoutConfig()
    lb = LoadBalancingConfig(circuit_breaker=None)
    assert lb.circuit_breaker == CircuitBreakerConfig()


# -- instances as strings, URLs, ids ------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected_id", "expected_url"),
    [
        ("local:http://localhost:11434", "local", "http://localhost:11434"),
        ("http://localhost:11434", "localhost:11434", "http://localhost:11434"),
        ("gpu:gpu1:11434", "gpu", "http://gpu1:11434"),
        ("localhost:11434", "localhost:11434", "http://localhost:11434"),
        ("gpu1", "gpu1:11434", "http://gpu1:11434"),
        ("gpu:gpu1", "gpu", "http://gpu1:11434"),
        ("secure:https://ollama.example.com", "secure", "https://ollama.example.com"),
        (
            "https://ollama.example.com/ollama/",
            "ollama.example.com/ollama",
            "https://ollama.example.com/ollama",
        ),
        ("[::1]:11434", "[::1]:11434", "http://[::1]:11434"),
        ("v6:[::1]:11435", "v6", "http://[::1]:11435"),
        ("10.0.0.5", "10.0.0.5:11434", "http://10.0.0.5:11434"),
    ],
)
def test_an_instance_given_as_a_string_follows_the_id_url_rules(entry, expected_id, expected_url):
    inst = PoolConfig(instances=[entry]).instances[0]
    assert (inst.id, inst.url) == (expected_id, expected_url)
    assert InstanceConfig.model_validate(entry) == inst


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("http://localhost:11434/", "http://localhost:11434"),
        ("HTTP://LocalHost:11434", "http://localhost:11434"),
        ("  http://gpu1:11434  ", "http://gpu1:11434"),
        ("http://ollama.example.com", "http://ollama.example.com"),  # scheme given: its default port
        ("https://proxy.example.com/ollama//", "https://proxy.example.com/ollama"),
        ("gpu1:8080", "http://gpu1:8080"),
        ("gpu1", "http://gpu1:11434"),  # no scheme, no port: Ollama's own default
    ],
)
def test_urls_are_normalised(given, normalised):
    assert InstanceConfig(url=given).url == normalised


def test_an_instance_id_defaults_to_host_and_port_without_credentials():
    assert InstanceConfig(url="http://user:pw@gpu1:11434").id == "gpu1:11434"
    assert InstanceConfig(url="http://gpu1:11434", id=None).id == "gpu1:11434"
    assert InstanceConfig(url="http://gpu1:11434", id=7).id == "7"


def test_tags_are_case_insensitive_deduplicated_in_order():
    inst = InstanceConfig(url="h", tags=["GPU", "high-memory", "gpu", " Fast "])
    assert inst.tags == ["gpu", "high-memory", "fast"]


def test_models_keep_their_spelling_and_drop_duplicates():
    inst = InstanceConfig(url="h", models=["llama3.2", "Mixtral:8x7b", "llama3.2"])
    assert inst.models == ["llama3.2", "Mixtral:8x7b"]


def test_models_and_tags_accept_a_comma_separated_string():
    inst = InstanceConfig(url="h", models="llama3.2, phi", tags="gpu")
    assert (inst.models, inst.tags) == (["llama3.2", "phi"], ["gpu"])


def test_numeric_header_values_become_strings():
    assert InstanceConfig(url="h", headers={"X-Tenant": 42}).headers == {"X-Tenant": "42"}


def test_empty_specialization_means_none():
    assert InstanceConfig(url="h", specialization="").specialization is None


# -- strategy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "member"),
    [
        ("least_loaded", LoadBalancingStrategy.LEAST_LOADED),
        ("Least-Loaded", LoadBalancingStrategy.LEAST_LOADED),
        ("ROUND_ROBIN", LoadBalancingStrategy.ROUND_ROBIN),
        ("model affinity", LoadBalancingStrategy.MODEL_AFFINITY),
        ("latency-based", LoadBalancingStrategy.LATENCY_BASED),
        ("Weighted", LoadBalancingStrategy.WEIGHTED),
        (" priority ", LoadBalancingStrategy.PRIORITY),
        (LoadBalancingStrategy.PRIORITY, LoadBalancingStrategy.PRIORITY),
    ],
)
def test_strategy_names_accept_case_and_separator_variants(given, member):
    assert LoadBalancingConfig(strategy=given).strategy is member
    assert LoadBalancingStrategy(given) is member
    assert LoadBalancingStrategy.parse(given) is member


def test_a_strategy_is_its_string_value():
    assert LoadBalancingStrategy.WEIGHTED == "weighted"
    assert str(LoadBalancingStrategy.WEIGHTED) == "weighted"
    assert f"{LoadBalancingStrategy.WEIGHTED}" == "weighted"


# -- cross-field rules ---------------------------------------------------------------------------


def test_default_open_time_cap_follows_a_longer_recovery_timeout():
    cb = CircuitBreakerConfig(recovery_timeout=600)
    assert cb.max_recovery_timeout == 600


def test_default_backoff_cap_follows_a_larger_backoff_base():
    assert LoadBalancingConfig(retry_backoff_base=5).retry_backoff_max == 5


@pytest.mark.parametrize("word", ["none", "None", "null", "off", "never", "unlimited"])
def test_a_timeout_can_be_switched_off_by_name(word):
    assert TimeoutConfig(total=word, idle=word).total is None


def test_a_total_timeout_can_be_set():
    assert TimeoutConfig(total=900).total == 900.0


# -- immutability and copies ---------------------------------------------------------------------


def test_configuration_is_immutable_and_says_how_to_change_it():
    cfg = PoolConfig(instances=["h"])
    with pytest.raises(ConfigError, match=r"immutable; use \.model_copy\(update=\{'instances': \.\.\.\}\)"):
        cfg.instances = []
    with pytest.raises(ConfigError, match="immutable"):
        cfg.load_balancing.failover = False
    with pytest.raises(ConfigError, match="immutable"):
        del cfg.timeouts


def test_model_copy_applies_the_update_and_validates_it():
    lb = LoadBalancingConfig()
    assert lb.model_copy(update={"strategy": "round-robin"}).strategy is LoadBalancingStrategy.ROUND_ROBIN
    with pytest.raises(ConfigError, match=r"retry_attempts = -1: must be at least 0"):
        lb.model_copy(update={"retry_attempts": -1})
    assert lb.model_copy() == lb


def test_model_copy_of_an_instance_rederives_a_default_id_but_keeps_a_chosen_one():
    derived = InstanceConfig(url="gpu1:11434")
    assert derived.model_copy(update={"url": "gpu2:11434"}).id == "gpu2:11434"
    chosen = InstanceConfig(id="gpu", url="gpu1:11434")
    assert chosen.model_copy(update={"url": "gpu2:11434"}).id == "gpu"


def test_a_config_survives_dump_and_validate():
    cfg = PoolConfig.from_dict(GUIDE_DICT)
    assert PoolConfig.model_validate(cfg.model_dump()) == cfg
    assert PoolConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert cfg.model_dump(mode="json")["load_balancing"]["strategy"] == "least_loaded"


# -- secrets -------------------------------------------------------------------------------------


def test_header_values_and_url_passwords_never_appear_in_repr_or_str():
    cfg = PoolConfig(
        instances=[
            {"url": "https://bob:hunter2@proxy.example.com", "headers": {"Authorization": "Bearer s3cr3t"}}
        ]
    )
    for text in (repr(cfg), str(cfg), repr(cfg.instances[0]), str(cfg.instances)):
        assert "s3cr3t" not in text and "hunter2" not in text
        assert "Authorization" in text
    assert "'Authorization': '***'" in repr(cfg.instances[0])
    assert cfg.instances[0].headers == {"Authorization": "Bearer s3cr3t"}  # the value itself is kept


# -- load() --------------------------------------------------------------------------------------


def test_load_returns_a_pool_config_unchanged():
    cfg = PoolConfig(instances=["h"])
    assert PoolConfig.load(cfg) is cfg


def test_load_reads_a_yaml_path_given_as_str_or_path(tmp_path):
    path = write(tmp_path, GUIDE_YAML)
    assert PoolConfig.load(path) == PoolConfig.load(str(path)) == PoolConfig.from_dict(GUIDE_DICT)


def test_load_accepts_a_plain_list_of_instances():
    cfg = PoolConfig.load(["local:http://localhost:11434", {"url": "gpu1"}])
    assert [i.id for i in cfg.instances] == ["local", "gpu1:11434"]


def test_load_of_none_reads_the_environment(monkeypatch):
    monkeypatch.setenv("GLEITZEIT_OLLAMA_INSTANCES", "a:h1:1,b:h2:2")
    monkeypatch.setenv("GLEITZEIT_OLLAMA_STRATEGY", "weighted")
    cfg = PoolConfig.load(None)
    assert [i.id for i in cfg.instances] == ["a", "b"]
    assert cfg.load_balancing.strategy is LoadBalancingStrategy.WEIGHTED


def test_load_rejects_other_types_saying_what_it_accepts():
    with pytest.raises(ConfigError, match=r"cannot load a pool configuration from int") as info:
        PoolConfig.load(42)  # type: ignore[arg-type]
    assert "a PoolConfig, a mapping, a YAML path, a list of instances, or None" in str(info.value.hint)


def test_importing_config_does_not_import_yaml():
    code = "import sys, gleitzeit_llm.config; print('yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
