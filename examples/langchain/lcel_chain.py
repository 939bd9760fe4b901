"""An LCEL chain, prompt | model | parser, over a pool of three Ollama servers.

The only change from a ChatOllama chain is the model object: ``ChatOllamaPool(model=...,
instances=[...])`` instead of ``ChatOllama(model=..., base_url=...)``. Each call goes to one of
the three servers; ``response_metadata["pool"]`` says which.

    .venv/bin/python examples/langchain/lcel_chain.py
"""

from __future__ import annotations

from collections import Counter

from _common import MODEL, servers
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_gleitzeit import ChatOllamaPool

QUESTIONS = [
    "Why is the sky blue?",
    "What is a circuit breaker in software?",
    "Name three rivers in Europe.",
    "What does a load balancer do?",
    "Why do leaves change colour?",
    "What is an embedding?",
]


def main() -> None:
    with servers(3) as instances:
        llm = ChatOllamaPool(model=MODEL, instances=instances, temperature=0, num_predict=64)
        prompt = ChatPromptTemplate.from_messages(
            [("system", "You answer in one short sentence."), ("human", "{question}")]
        )
        chain = prompt | llm | StrOutputParser()

        print(f"Q: {QUESTIONS[0]}\nA: {chain.invoke({'question': QUESTIONS[0]})}")

        # batch() runs the questions concurrently; the pool spreads them over its servers.
        answers = chain.batch([{"question": q} for q in QUESTIONS], config={"max_concurrency": 6})
        print(f"{len(answers)} answers in one batch, e.g. {answers[-1]!r}")

        # To see where each call went, keep the model's message (not just the parsed text).
        served = Counter(
            (prompt | llm).invoke({"question": q}).response_metadata["pool"]["instance_id"] for q in QUESTIONS
        )
        print("served by:", ", ".join(f"{instance}={count}" for instance, count in sorted(served.items())))
        llm.close()  # stops the pool's health checks (also happens when llm is garbage-collected)


if __name__ == "__main__":
    main()
