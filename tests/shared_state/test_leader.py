"""Health-probe leadership through one Redis key (SET NX PX, compare-and-renew, compare-and-delete),
against a real redis-server, with a leader in another OS process that is SIGKILLed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
import redis

from gleitzeit_llm.state.redis.leader import ProbeLeader, process_token
from gleitzeit_llm.testing.redis_server import RedisServer

from .shared_procs import client, lead_until_killed

KEY = "gleitzeit:{test}:leader"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    with client(redis_server.url) as c:
        yield c


def test_one_of_two_processes_leads_and_the_key_names_it(r: redis.Redis) -> None:
    a, b = ProbeLeader(KEY, ttl=5), ProbeLeader(KEY, ttl=5)
    assert a.tick(r) is True
    assert b.tick(r) is False
    assert (a.leading, b.leading) == (True, False)
    assert a.holder(r) == a.token
    assert 0 < r.pttl(KEY) <= 5000


def test_the_leader_renews_its_own_key(r: redis.Redis) -> None:
    a = ProbeLeader(KEY, ttl=5)
    a.tick(r)
    r.pexpire(KEY, 50)  # about to expire: a renewal must put the full TTL back
    assert a.tick(r) is True
    assert r.pttl(KEY) > 4000
    assert r.get(KEY).decode() == a.token


def test_a_stalled_leader_never_extends_its_successors_key(r: redis.Redis) -> None:
    clock = Clock()
    stalled = ProbeLeader(KEY, ttl=100, clock=clock)
    assert stalled.tick(r)
    r.delete(KEY)  # its key expired while it stalled ...
    successor = ProbeLeader(KEY, ttl=1)
    assert successor.tick(r)  # ... and another process took over
    assert stalled.tick(r) is False  # compare-and-renew: not its key, not renewed
    assert r.get(KEY).decode() == successor.token
    assert r.pttl(KEY) <= 1000  # still the successor's TTL, not the stalled one's 100 s


def test_a_process_believes_it_leads_only_for_one_ttl_after_it_asked(r: redis.Redis) -> None:
    clock = Clock()
    a = ProbeLeader(KEY, ttl=3, clock=clock)
    a.tick(r)
    clock.now += 2.9
    assert a.leading
    clock.now += 0.2  # no renewal came through: it stops probing on its own clock
    assert not a.leading


def test_resign_deletes_only_its_own_key_so_a_successor_need_not_wait(r: redis.Redis) -> None:
    a, b = ProbeLeader(KEY, ttl=60), ProbeLeader(KEY, ttl=60)
    a.tick(r)
    assert not b.tick(r)
    assert a.resign(r) is True
    assert not a.leading
    assert b.tick(r)  # at once, not after 60 s
    assert a.resign(r) is False  # a no longer holds it: b's key stays
    assert r.get(KEY).decode() == b.token


def test_a_restarted_empty_redis_is_led_again(redis_server: RedisServer, r: redis.Redis) -> None:
    a, b = ProbeLeader(KEY, ttl=5), ProbeLeader(KEY, ttl=5)
    a.tick(r)
    redis_server.restart()  # comes back empty: a's renewal finds no key
    assert b.tick(r) is True
    assert a.tick(r) is False


def test_redis_down_changes_nothing_until_the_lease_runs_out(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    clock = Clock()
    a = ProbeLeader(KEY, ttl=3, clock=clock)
    a.tick(r)
    redis_server.kill()
    with pytest.raises(redis.ConnectionError):
        a.tick(r)
    assert a.leading  # the lease it holds on its own clock is still good
    pipe = r.pipeline(transaction=False)
    a.queue(pipe)
    assert a.settle(redis.ConnectionError("down")) is True
    clock.now += 3.1
    assert not a.leading


def test_a_pipelined_tick_rides_on_the_callers_round_trip(r: redis.Redis) -> None:
    a, b = ProbeLeader(KEY, ttl=5), ProbeLeader(KEY, ttl=5)
    pipe = r.pipeline(transaction=False)
    pipe.ping()
    a.queue(pipe)
    b.queue(pipe)
    pong, reply_a, reply_b = pipe.execute()
    assert pong and a.settle(reply_a) and not b.settle(reply_b)
    pipe = r.pipeline(transaction=False)
    a.queue(pipe)  # now a renewal (a script), still one command in the same pipeline
    assert a.settle(pipe.execute()[0])


def test_bad_ttl_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="leader ttl"):
        ProbeLeader(KEY, ttl=0)


def test_process_tokens_differ_within_one_process() -> None:
    assert process_token() != process_token()
    assert f":{os.getpid()}:" in process_token()


def test_a_sigkilled_leader_process_is_succeeded_within_one_ttl(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    ttl = 1.5  # the child renews every ttl / 10: it may stall 1.3 s on a loaded machine
    ctx = multiprocessing.get_context("spawn")
    leading, stop = ctx.Event(), ctx.Value("b", 0)
    token = "child:" + process_token()
    child = ctx.Process(target=lead_until_killed, args=(redis_server.url, KEY, ttl, token, leading, stop))
    child.start()
    try:
        assert leading.wait(30), "the child never took the lead"
        follower = ProbeLeader(KEY, ttl=ttl)
        # While the child lives it renews: the follower never gets the key, however long it asks
        # (longer than one TTL: a key that was not renewed would have expired).
        deadline = time.monotonic() + 1.5 * ttl
        while time.monotonic() < deadline:
            assert not follower.tick(r)
            time.sleep(ttl / 10)  # pacing the follower's asks, as a refresh loop does
        assert r.get(KEY).decode() == token
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        # No resign after SIGKILL: the key is left with at most one TTL to live ...
        assert 0 < r.pttl(KEY) <= ttl * 1000
        deadline = time.monotonic() + 10
        while not follower.tick(r):
            assert time.monotonic() < deadline, "no hand-over"
            time.sleep(ttl / 20)
        # ... and the follower took over as soon as it was gone.
        assert r.get(KEY).decode() == follower.token
    finally:
        stop.value = 1
        if child.is_alive():
            child.kill()
        child.join(10)


def test_a_leader_process_that_closes_hands_over_at_once(redis_server: RedisServer, r: redis.Redis) -> None:
    ttl = 30.0  # long: a successor that took over at once did not wait for it
    ctx = multiprocessing.get_context("spawn")
    leading, stop = ctx.Event(), ctx.Value("b", 0)
    child = ctx.Process(target=lead_until_killed, args=(redis_server.url, KEY, ttl, "child", leading, stop))
    child.start()
    try:
        assert leading.wait(30)
        follower = ProbeLeader(KEY, ttl=ttl)
        assert not follower.tick(r)
        stop.value = 1
        child.join(30)
        assert child.exitcode == 0
        assert follower.tick(r)
    finally:
        stop.value = 1
        if child.is_alive():
            child.kill()
        child.join(10)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_takes_a_token_of_its_own_and_no_inherited_leadership(r: redis.Redis) -> None:
    # gunicorn --preload: the pool is built, and may even lead, before the workers are forked.
    from gleitzeit_llm.state.redis.facts import SharedFacts

    leader, facts = ProbeLeader(KEY, ttl=60), SharedFacts("gleitzeit:{test}:facts")
    assert leader.tick(r)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once (no pytest teardown in a fork)
        os.write(write, f"{leader.token} {facts.token} {int(leader.leading)}".encode())
        os._exit(0)
    os.close(write)
    child_leader, child_facts, child_leading = os.read(read, 1000).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    assert child_leader != leader.token and child_facts != facts.token
    assert child_leading == "0"  # the parent's lease is the parent's
    assert f":{pid}:" in child_leader


def test_two_ticks_of_one_process_that_cross_leave_it_knowing_it_leads(r: redis.Redis) -> None:
    """The first should_probe() tick and the refresh's tick can run at once. The one whose reply
    is read second must not undo the other: asking for a key this process already holds is a
    win, not a loss (before, no process probed until the key expired)."""
    leader = ProbeLeader(KEY, ttl=5)
    early, late = r.pipeline(transaction=False), r.pipeline(transaction=False)
    leader.queue(early)
    leader.queue(late)
    took = early.execute()[0]  # takes the key
    again = late.execute()[0]  # asks for the key it holds already

    leader.settle(again)
    leader.settle(took)

    assert r.get(KEY).decode() == leader.token
    assert leader.leading
