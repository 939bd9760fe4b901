"""The call path's own connection to Redis: acquire and release (one round trip each) go over it.

The store calls it only under the pool's lock, so one connection serves the whole process, and
each round trip skips what redis-py does around a command for a connection shared by threads:
checking one out of the pool and back in, the retry wrapper and the command instrumentation.
On this project's bench that is about half of the client's time per round trip
(docs/scale-out.md). Commands and replies are redis-py's own (its packer, its parser, hiredis
when installed); the background work (refresh, renewal, probes) keeps using the shared client.
"""

from __future__ import annotations

import os
import select
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import NoScriptError, ResponseError

if TYPE_CHECKING:
    from gleitzeit_llm.state.redis.scripts import Script

__all__ = ["CallLine"]


class CallLine:
    """One connection made from ``client``'s pool, used by one thread at a time.

    A cluster client is used as it is (its routing is the point of it).
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        # A cluster client (state/redis/cluster.py) routes each command to its slot's node itself;
        # asking it for a pool would also connect it, which it defers to the first command.
        self._pool = client.connection_pool if isinstance(client, Redis) else None
        self._conn: Any = None
        self._pid = 0  # a forked child must not share the parent's socket
        self._poll: Any = None
        self._polled: Any = None  # the socket self._poll watches

    def _connection(self) -> Any:
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._pool.make_connection()
            self._pid = os.getpid()
            self._polled = None
        conn = self._conn
        sock = conn._sock
        if sock is not None:
            if self._polled is not sock:
                self._poll = select.poll()
                self._poll.register(sock, select.POLLIN)
                self._polled = sock
            # Readable before we asked: the server closed it (a restart) or left a stale reply.
            # As redis-py's pool does on checkout, start over on a fresh socket.
            if self._poll.poll(0):
                conn.disconnect()
        return conn

    def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` in one write and read every reply; an error reply is returned in its
        place, a broken link raises (and the connection is dropped)."""
        conn = self._connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:  # the reply of one command: the link is fine
                    replies.append(exc)
            return replies
        except BaseException:
            # Half-read replies (a timeout, a cancellation) would answer the next command.
            conn.disconnect()
            raise

    def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` (one round trip; two more when Redis forgot it)."""
        if self._pool is None:
            return script(self._client, keys, args)
        reply = self.execute([("EVALSHA", script.sha, len(keys), *keys, *args)])[0]
        if isinstance(reply, NoScriptError):  # a restarted or flushed Redis
            return script(self._client, keys, args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def execute_pipeline(self, pipe: Any) -> list[Any]:
        """The commands queued on the redis-py pipeline ``pipe``, in one round trip: their replies,
        an error reply in its place (``pipe.execute(raise_on_error=False)``, without the
        pipeline's own reply callbacks)."""
        if self._pool is None:
            return pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]
        return self.execute([command for command, _options in pipe.command_stack])

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.disconnect()
        self._conn = None
