"""One application process of the shared prefix-index tests, driven line by line over stdin/stdout.

``python prefix_worker.py '<json spec>'`` builds a pool (``instances``, ``load_balancing``,
``shared_state``, and ``seed`` for its router's random tie-breaks), prints ``ready``, then
answers one JSON line per command:

* ``{"op": "chat", "conversations": [[message, ...], ...]}`` -> ``{"answers": [{"instance": id,
  "content": text}, ...]}``, one call per conversation, one after another;
* ``{"op": "matched", "conversations": [...]}`` -> ``{"matched": [{instance id: blocks}, ...],
  "blocks": [n, ...]}``: how much of each prompt this process's prefix index places where;
* ``{"op": "quit"}`` -> closes the pool, prints ``closed`` and exits.

A command that takes more than 30 s dumps every thread's stack to stderr and exits, so a hang
fails the test with the stacks instead of blocking it.
"""

from __future__ import annotations

import faulthandler
import json
import random
import sys
from typing import Any

from gleitzeit_llm import OllamaPoolManager, OllamaPoolProvider
from gleitzeit_llm.ollama.names import model_key
from gleitzeit_llm.routing.prefix import prompt_prefix

MODEL = "llama3.2"


def matched(manager: OllamaPoolManager, conversations: list[list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"matched": [], "blocks": []}
    with manager._lock:
        index = manager._router.prefix_index
        for messages in conversations:
            prefix = prompt_prefix("chat", {"messages": messages})
            assert prefix is not None
            out["blocks"].append(len(prefix.blocks))
            out["matched"].append(
                {inst.id: index.matched(inst.id, model_key(MODEL), prefix) for inst in manager._instances}
            )
    return out


def main(spec: dict[str, Any]) -> None:
    manager = OllamaPoolManager(
        spec["instances"],
        load_balancing=spec.get("load_balancing"),
        shared_state=spec.get("shared_state"),
        health_checks=False,
        rng=random.Random(spec.get("seed")),
    )
    with OllamaPoolProvider(manager=manager) as pool:
        print("ready", flush=True)
        for line in sys.stdin:
            faulthandler.dump_traceback_later(30, exit=True)
            command = json.loads(line)
            op = command["op"]
            if op == "quit":
                break
            if op == "chat":
                answers = []
                for messages in command["conversations"]:
                    answer = pool.chat_sync(MODEL, messages)
                    answers.append({"instance": answer.pool.instance_id, "content": answer.message.content})
                reply: dict[str, Any] = {"answers": answers}
            elif op == "matched":
                reply = matched(manager, command["conversations"])
            else:
                reply = {"error": f"unknown op {op!r}"}
            faulthandler.cancel_dump_traceback_later()
            print(json.dumps(reply), flush=True)
    faulthandler.cancel_dump_traceback_later()
    print("closed", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
