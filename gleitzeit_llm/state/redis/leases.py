"""This process's own leases: which slots it holds, so it can release the right member, renew
them while the calls run and bring them back after Redis restarted empty."""

from __future__ import annotations

import itertools
import os
import uuid
from typing import TYPE_CHECKING, Any

from gleitzeit_llm.state.redis.scripts import RENEW

if TYPE_CHECKING:
    from gleitzeit_llm.state.redis.keys import Keys

__all__ = ["HeldLeases"]


class HeldLeases:
    """Lease members by (instance, model), and counts per instance and per model.

    Leases of one (instance, model) are interchangeable, so release gives back the newest.
    Mutated under the pool's lock (acquire, release); :meth:`snapshot` copies for the renewal,
    which runs outside it.
    """

    def __init__(self) -> None:
        # The process token: pid (readable in MONITOR) plus randomness (pids repeat across hosts).
        self.pid = os.getpid()
        self.token = f"{self.pid}-{uuid.uuid4().hex[:8]}"
        self._ids = itertools.count(1)
        self._members: dict[tuple[str, str], list[str]] = {}
        self.count: dict[str, int] = {}
        self.by_model: dict[str, dict[str, int]] = {}
        self.released_while_down: list[tuple[str, str, str]] = []  # (instance, model, member)

    def new_member(self, model: str | None) -> str:
        return f"{self.token}:{next(self._ids)}|{model or ''}"

    def add(self, instance_id: str, model: str | None, member: str) -> None:
        self._members.setdefault((instance_id, model or ""), []).append(member)
        self.count[instance_id] = self.count.get(instance_id, 0) + 1
        if model is not None:
            models = self.by_model.setdefault(instance_id, {})
            models[model] = models.get(model, 0) + 1

    def pop(self, instance_id: str, model: str | None) -> str | None:
        """The member of one lease held on (instance, model), forgotten; None if none is held."""
        members = self._members.get((instance_id, model or ""))
        if not members:
            return None
        member = members.pop()
        if not members:
            del self._members[(instance_id, model or "")]
        left = self.count.get(instance_id, 0) - 1
        if left > 0:
            self.count[instance_id] = left
        else:
            self.count.pop(instance_id, None)
        if model is not None:
            models = self.by_model.get(instance_id, {})
            n = models.get(model, 0) - 1
            if n > 0:
                models[model] = n
            else:
                models.pop(model, None)
        return member

    def snapshot(self) -> list[tuple[str, str, str]]:
        """Every lease held: (instance, model or '', member)."""
        return [(i, m, member) for (i, m), members in self._members.items() for member in members]

    def renew(self, client: Any, keys: Keys, leases: list[tuple[str, str, str]], expiry_ms: int) -> int:
        """Push every lease's expiry to ``expiry_ms``, adding back those Redis lost (one round
        trip); returns how many came back."""
        if not leases:
            return 0
        key_list: list[str] = []
        args: list[Any] = [expiry_ms]
        for instance_id, model, member in leases:
            key_list += [keys.leases(instance_id), keys.models(instance_id)]
            args += [member, model]
        return int(RENEW(client, key_list, args))
