"""Benchmarks of gleitzeit-llm against the limit and against plain clients (issue 7).

``python -m bench`` (or ``make bench``) runs every scenario, writes ``bench/results/<date>.json``,
rewrites the generated table in ``docs/performance.md`` and draws PNG plots into
``bench/results/plots/``. ``python -m bench --quick`` is a smoke run of a minute or so.

Every scenario runs in its own child process (``python -m bench.run_one``) so that one scenario's
imports, threads and garbage never reach another's numbers; the emulated Ollama servers run in
further child processes (:class:`gleitzeit_llm.testing.EmulatorProcess`), never on the client's
event loop. All traffic stays on 127.0.0.1.

Speed is measured here and nowhere else: the test suite only checks that this harness runs.
"""
