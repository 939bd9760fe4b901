# Generated from gleitzeit_llm/_async/__init__.py by scripts/unasync.py, do not edit.
# Change that file instead, then run `make unasync`.
"""The provider's send chain: the async package is written by hand, the blocking one is generated
from it by ``scripts/unasync.py``."""
