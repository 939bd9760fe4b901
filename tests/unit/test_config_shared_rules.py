"""One rule per fact: URLs, their redaction, timeouts and YAML line numbers mean the same
in the configuration, on the wire and in workflows."""

from __future__ import annotations

from pathlib import Path

import pytest

from gleitzeit_llm import OllamaPoolProvider
from gleitzeit_llm.config import InstanceConfig, PoolConfig, TimeoutConfig
from gleitzeit_llm.errors import ConfigError
from gleitzeit_llm.ollama import Timeouts, redact_url
from gleitzeit_llm.workflow import Workflow, WorkflowError


def config_error(call, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        call(*args, **kwargs)
    return caught.value


# -- one redaction rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("http://bob:hunter2@h1:1", "hunter2"),
        ("http://s3cr3t-token@h1:1", "s3cr3t-token"),  # a token as the user name
        ("http://bob:p@ss-w0rd@h1:1", "ss-w0rd"),  # an '@' inside the password
    ],
)
def test_a_url_with_credentials_shows_the_same_in_errors_repr_and_status(url: str, secret: str) -> None:
    shown = redact_url(url)
    assert shown == "http://h1:1"
    duplicate = config_error(PoolConfig, instances=[url, url])
    api_path = config_error(InstanceConfig, url=url + "/api")
    pool = OllamaPoolProvider(instances=[url], health_checks=False)
    everything = [
        str(duplicate),
        repr(duplicate.value),
        str(api_path),
        repr(api_path.value),
        repr(InstanceConfig(url=url)),
        str(pool.status()),
    ]
    for text in everything:
        assert secret not in text and "bob" not in text
    assert repr(shown) in str(duplicate) and repr(shown + "/api") in str(api_path)
    assert pool.status()["instances"]["h1:1"]["url"] == shown
    assert InstanceConfig(url=url).url == url  # the configured URL keeps them: the transport logs in


def test_the_transport_and_the_config_accept_and_reject_the_same_urls() -> None:
    from gleitzeit_llm.ollama.urls import parse_instance_url, parse_url

    for bad in ("http://gpu1:11434/api/chat", "http://gpu1:11434?x=1", "http://exa mple:1", "ftp://gpu1"):
        config = config_error(InstanceConfig, url=bad)
        wire = config_error(parse_instance_url, bad)
        assert config.hint == wire.hint and wire.field == "url"
    assert parse_instance_url("bob:pw@GPU1") == ("http://gpu1:11434", "bob", "pw")
    assert InstanceConfig(url="bob:pw@GPU1").url == "http://bob:pw@gpu1:11434"
    assert "pw" not in repr(parse_url("http://bob:pw@gpu1"))


# -- one timeout rule -----------------------------------------------------------------------------


def test_timeout_config_gives_the_wire_timeouts() -> None:
    config = TimeoutConfig(connect=1, first_byte="none", idle=2.5, total=60)
    assert config.to_timeouts() == Timeouts(connect=1.0, first_byte=None, idle=2.5, total=60.0)
    assert TimeoutConfig().to_timeouts() == Timeouts()


def test_a_provider_runs_on_its_configured_timeouts() -> None:
    config = PoolConfig(instances=["h1"], timeouts={"idle": 7, "total": None})
    provider = OllamaPoolProvider(config=config, health_checks=False)
    assert provider._timeouts == config.timeouts.to_timeouts()


@pytest.mark.parametrize("bad", [0, -1.5])
def test_a_bad_timeout_reads_the_same_in_config_and_on_the_wire(bad: float) -> None:
    config = config_error(TimeoutConfig, idle=bad)
    wire = config_error(Timeouts, idle=bad)
    assert str(config) == f"idle = {bad!r}: must be greater than 0; use none for no limit"
    assert config.hint == wire.hint and wire.field == "timeouts.idle"


# -- one YAML reader ------------------------------------------------------------------------------

BROKEN = "instances:\n  - id: a\n    url: [http://a:11434\nload_balancing:\n  strategy: x\n"


def test_a_workflow_yaml_error_names_the_line_as_a_config_yaml_error_does(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    config = config_error(PoolConfig.from_yaml, path)
    workflow = config_error(Workflow.load, path)
    assert isinstance(workflow, WorkflowError)
    assert str(config).startswith(f"{path}, line 4, column 15: malformed YAML: ")
    assert str(workflow) == str(config)
    assert workflow.hint == config.hint


def test_a_workflow_field_error_points_at_its_key_line_as_config_does(tmp_path: Path) -> None:
    # A block value starts a line below its key; both name the key's line.
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text("tasks:\n  - name: a\n    params:\n      - model\n")
    pool = tmp_path / "pool.yaml"
    pool.write_text("instances:\n  - url: h\n    headers:\n      - x\n")
    assert str(config_error(PoolConfig.from_yaml, pool)).startswith(f"{pool}, line 3: ")
    assert str(config_error(Workflow.load, workflow)).startswith(f"{workflow}, line 3: ")


def test_a_missing_workflow_file_reads_like_a_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert str(config_error(Workflow.load, missing)) == f"workflow file not found: {missing}"
    assert str(config_error(PoolConfig.from_yaml, missing)) == f"configuration file not found: {missing}"
