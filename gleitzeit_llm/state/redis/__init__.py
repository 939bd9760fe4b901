"""The state shared through Redis (see docs/scale-out.md)."""
