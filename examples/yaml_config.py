"""YAML configuration: the guide's pool file and its workflow file, loaded and run.

``PoolConfig.from_yaml`` reads both forms: a pool file (top-level ``instances:`` and
``load_balancing:``) and a workflow file, where the pool is the ``providers:`` entry of type
``ollama_pool`` (other keys such as ``tasks:`` are ignored by it). This script writes the guide's
YAML to a temporary folder, with the emulators' URLs in place of the guide's hosts, loads it, and
runs the workflow's tasks through the pool.

    .venv/bin/python examples/yaml_config.py

With real servers it takes the first two configured URLs for ``cpu-1`` and ``gpu-1``; tasks for
models your servers lack are reported, not fatal.
"""

from __future__ import annotations

import asyncio
import string
import tempfile
from pathlib import Path
from typing import Any

import yaml
from _servers import servers

from gleitzeit_llm import GleitzeitError, OllamaPoolProvider, PoolConfig

# The guide's "Instance Configuration" and "Load Balancing Configuration", as one pool file.
POOL_YAML = """
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

# The guide's "YAML Workflow Configuration", plus its "Dynamic Instance Selection" task.
WORKFLOW_YAML = """
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
  # Task with automatic load balancing
  - name: "Quick Analysis"
    protocol: "llm/v1"
    method: "llm/chat"
    params:
      model: "llama3.2"
      messages:
        - role: "user"
          content: "Analyze this quickly"

  # Task requiring GPU instance
  - name: "Deep Analysis"
    protocol: "llm/v1"
    method: "llm/chat"
    params:
      model: "llama3.2:70b"
      instance_tags: ["gpu"]
      require_gpu: true
      messages:
        - role: "user"
          content: "Perform deep analysis"

  # Task with specific strategy
  - name: "Fast Response"
    protocol: "llm/v1"
    method: "llm/chat"
    params:
      model: "phi"
      load_balancing_strategy: "latency_based"
      max_latency: 1000  # Prefer instances under 1s latency
      messages:
        - role: "user"
          content: "Quick question"

  - name: "Model-Specific Task"
    protocol: "llm/v1"
    method: "llm/chat"
    params:
      model: "${model_name}"  # Dynamic model selection
      load_balancing_strategy: "model_affinity"
      fallback_model: "llama3.2"  # Use if primary not available
      messages:
        - role: "user"
          content: "${prompt}"
"""


async def main() -> None:
    specs = [
        {"id": "cpu-1", "models": ["llama3.2", "phi"]},
        {"id": "gpu-1", "models": ["llama3.2:70b", "mixtral", "mixtral:8x7b"]},
    ]
    with servers(specs) as instances, tempfile.TemporaryDirectory() as folder:
        if len(instances) < 2:
            print("This example needs two servers (cpu-1 and gpu-1).")
            return
        cpu_url, gpu_url = instances[0]["url"], instances[1]["url"]

        def write(name: str, text: str) -> Path:
            path = Path(folder, name)
            path.write_text(
                text.replace("http://localhost:11434", cpu_url).replace("http://gpu1:11434", gpu_url)
            )
            return path

        # 1. The pool file: every field of the guide, validated; defaults filled in.
        pool = PoolConfig.from_yaml(write("pool.yaml", POOL_YAML))
        gpu = pool.instances[0]
        print(f"pool.yaml: {gpu.id} at {gpu.url}, models {gpu.models}, tags {gpu.tags}, weight {gpu.weight}")
        print(
            f"  load_balancing: {pool.load_balancing.strategy.value}, "
            f"circuit breaker opens after {pool.load_balancing.circuit_breaker.failure_threshold} failures"
        )
        async with OllamaPoolProvider(config=pool) as provider:
            hello = {
                "model": "llama3.2:70b",
                "messages": [{"role": "user", "content": "Hello from pool.yaml"}],
            }
            await run_task(provider, "pool.yaml", "llm/chat", hello, strict=instances.emulated)

        # 2. The workflow file, its ${...} placeholders filled in; the pool is providers.ollama.
        text = string.Template(WORKFLOW_YAML).safe_substitute(
            model_name="mixtral:8x22b", prompt="Compare them"
        )
        workflow = write("workflow.yaml", text)
        config = PoolConfig.from_yaml(workflow)
        print(f"\nworkflow.yaml: instances {[i.id for i in config.instances]}")
        tasks = yaml.safe_load(workflow.read_text())["tasks"]
        async with OllamaPoolProvider(config=config) as provider:
            for task in tasks:
                await run_task(
                    provider, task["name"], task["method"], task["params"], strict=instances.emulated
                )


async def run_task(
    provider: OllamaPoolProvider, name: str, method: str, params: dict[str, Any], strict: bool
) -> None:
    """Run one task; on real servers a missing model is reported instead of raised."""
    try:
        result = await provider.execute(method, params)
    except GleitzeitError as exc:
        if strict:
            raise
        print(f"  {name:<20} not run on your servers: {exc}")
        return
    info = result["pool"]
    model = info["model"] + (f" (fallback for {info['requested_model']})" if info["fallback_used"] else "")
    print(f"  {name:<20} -> {info['instance_id']}, model {model}")


if __name__ == "__main__":
    asyncio.run(main())
