"""A VectorStoreIndex over a folder of text files, queried through the pool.

``OllamaPoolEmbedding`` embeds the files (each batch spread over the servers in parallel) and
``OllamaPool`` answers through a query engine and a chat engine. Both share one pool. Compared
with LlamaIndex's own Ollama classes, only the constructors differ::

    llm = Ollama(model="llama3.2", base_url="http://localhost:11434")             # before
    llm = OllamaPool(model="llama3.2", instances=["http://gpu:11434", "http://cpu:11434"])  # after

Run it from the repository root:

    .venv/bin/python examples/llama_index/rag_index.py
"""

from __future__ import annotations

from _common import DATA, EMBED_MODEL, MODEL, servers
from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.memory import ChatMemoryBuffer

from gleitzeit_llm import OllamaPoolProvider
from llama_index.embeddings.gleitzeit import OllamaPoolEmbedding
from llama_index.llms.gleitzeit import OllamaPool


def main() -> None:
    with servers(3) as instances, OllamaPoolProvider(instances=instances) as pool:
        # One pool for both: the LLM and the embeddings see the same health, breakers and load.
        # Setting both in Settings also means nothing in LlamaIndex falls back to OpenAI.
        Settings.llm = OllamaPool(model=MODEL, pool=pool)
        Settings.embed_model = OllamaPoolEmbedding(model_name=EMBED_MODEL, pool=pool)

        documents = SimpleDirectoryReader(str(DATA)).load_data()
        index = VectorStoreIndex.from_documents(documents)
        print(f"indexed {len(documents)} files from {DATA.name}/")

        query_engine = index.as_query_engine(similarity_top_k=2)
        answer = query_engine.query("Which server has a GPU?")
        print(f"query engine: {answer}")
        print(f"  sources: {', '.join(sorted(n.metadata['file_name'] for n in answer.source_nodes))}")

        chat_engine = index.as_chat_engine(
            chat_mode="condense_plus_context", memory=ChatMemoryBuffer.from_defaults(token_limit=3000)
        )
        print(f"chat engine: {chat_engine.chat('What happens on Tuesdays?')}")
        print(f"chat engine (follow-up): {chat_engine.chat('And who notices when it goes wrong?')}")

        served = {i: s["total_requests"] for i, s in pool.status()["instances"].items()}
        print(f"requests per instance (chat and embeddings): {served}")


if __name__ == "__main__":
    main()
