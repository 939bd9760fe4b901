"""Arbitrary configuration input ends in our ConfigError naming a field, never in a traceback
from inside pydantic, yaml or the standard library."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gleitzeit_llm.config import PoolConfig
from gleitzeit_llm.errors import ConfigError

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["id", "url", "models", "max_concurrent", "tags", "priority", "weight", "specialization", "headers", "x"]
)
instance = st.dictionaries(field_names, json_values, max_size=6) | st.text(max_size=40)
lb_names = st.sampled_from(
    [
        "strategy",
        "health_check_interval",
        "failover",
        "retry_attempts",
        "queue_timeout",
        "circuit_breaker",
        "nope",
    ]
)
pool = st.fixed_dictionaries(
    {},
    optional={
        "instances": st.lists(instance, max_size=4) | json_values,
        "load_balancing": st.dictionaries(lb_names, json_values, max_size=4) | json_values,
        "timeouts": st.dictionaries(st.sampled_from(["connect", "idle", "first_byte", "total"]), json_values)
        | json_values,
        "extra": json_values,
    },
)


def check(build: Any) -> None:
    try:
        build()
    except ConfigError as error:
        assert str(error)
        assert error.field, f"ConfigError without a field: {error}"


@settings(max_examples=300, deadline=None)
@given(pool)
def test_any_mapping_is_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    check(lambda: PoolConfig.from_dict(data))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "GLEITZEIT_OLLAMA_INSTANCES",
                "GLEITZEIT_OLLAMA_STRATEGY",
                "GLEITZEIT_OLLAMA_HEALTH_CHECK_INTERVAL",
                "GLEITZEIT_OLLAMA_FAILOVER",
                "GLEITZEIT_OLLAMA_RETRY_ATTEMPTS",
                "GLEITZEIT_OLLAMA_TIMEOUT_IDLE",
            ]
        ),
        st.text(max_size=40),
        max_size=5,
    )
)
def test_any_environment_is_a_config_or_a_config_error(environ: dict[str, str]) -> None:
    check(lambda: PoolConfig.from_env(environ))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_any_yaml_text_is_a_config_or_a_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pool.yaml"
        path.write_text(text, encoding="utf-8")
        check(lambda: PoolConfig.from_yaml(path))
