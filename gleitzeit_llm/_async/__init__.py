"""The provider's send chain: the async package is written by hand, the blocking one is generated
from it by ``scripts/unasync.py``."""
