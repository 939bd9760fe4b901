"""The I/O of the wire layer: the async package is written by hand, the blocking one is generated
from it by ``scripts/unasync.py``."""
