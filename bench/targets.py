"""The issue's targets, evaluated against one run's results.

Each target reads the median over repeated runs (with its spread) where the scenario repeats,
and says ``met`` True/False, or None when the run did not measure it (a scenario skipped or
failed, or a quick run too small to judge, e.g. memory over fewer than 100,000 requests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ROUTING_STRATEGY = "least_loaded"  # the default strategy

# id -> (title, goal, unit)
TARGETS = {
    "routing_100": ("Routing decision at 100 instances", "< 50 us", "us"),
    "added_latency": ("Added latency p50 vs plain httpx", "< 0.5 ms", "ms"),
    "throughput": ("Throughput vs N*c/service_time", ">= 95 %", "%"),
    "unequal": ("latency_based p99 vs round_robin, one instance 10x slower", "<= 1/3", "ratio"),
    "coldstart": (
        "latency_based p99 vs round_robin from a fresh pool (cold start), one instance 10x slower",
        "<= 1/3",
        "ratio",
    ),
    "failover": ("Failed requests when an instance is stopped", "0", "requests"),
    "residency": ("Cold loads while a loaded replica has a free slot (model_affinity)", "0", "loads"),
    "cache_ttft": ("cache_aware TTFT p50 vs least_loaded, multi-turn RAG chat", "<= 1/2", "ratio"),
    "cache_throughput": ("cache_aware throughput vs least_loaded, multi-turn RAG chat", ">= 1", "ratio"),
    "cache_skew": (
        "cache_aware with one hot prefix: TTFT p99 vs least_loaded, and busiest share vs fair",
        "<= 1 and <= 1.5x",
        "ratio",
    ),
    "import": ("import gleitzeit_llm", "< 150 ms", "ms"),
    "memory": ("Memory growth over 100,000 requests", "< 10 MB", "MB"),
    "shared_cap": (
        "Global cap, 4 processes with shared state (servers' peak above max_concurrent)",
        "0",
        "violations",
    ),
    "shared_latency": ("Added latency p50 with shared state (Redis on loopback)", "<= 1 ms", "ms"),
    "shared_round_trips": ("Redis round trips per call with shared state", "<= 2", "round trips"),
    "shared_breaker": ("A breaker trip reaching every process (shared state)", "<= 0.25 s", "s"),
    "gateway_latency": ("Gateway added p50 at concurrency 1 vs direct", "< 1 ms", "ms"),
    "gateway_throughput": ("Gateway throughput at concurrency 64 vs direct", ">= 70 %", "%"),
}


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _fmt(summary: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    """median [min..max] of a spread() summary."""
    if not summary or summary.get("median") is None:
        return "n/a"
    m, lo, hi = (summary[k] * scale for k in ("median", "min", "max"))
    return f"{m:.{digits}f} [{lo:.{digits}f}..{hi:.{digits}f}]"


def _routing(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    row = _get(sc, "routing", "by_instances", "100")
    if not row:
        return None
    worst_name = max(row, key=lambda s: row[s]["select"]["best_us"])
    worst = row[worst_name]["select"]["best_us"]
    default = row.get(ROUTING_STRATEGY, row[worst_name])
    detail = (
        f"Router.select, best of N: {ROUTING_STRATEGY} {default['select']['best_us']:.1f} us, slowest "
        f"strategy {worst_name} {worst:.1f} us; with the manager's lock, lease and bookkeeping "
        f"({ROUTING_STRATEGY}) {default['acquire']['best_us']:.1f} us"
    )
    return worst, worst < 50.0, detail


def _added_latency(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    pairs = _get(sc, "overhead", "by_concurrency", "1", "pairs") or {}
    pair, stream = pairs.get("pool-vs-httpx"), pairs.get("pool-vs-httpx_stream")
    if not pair:
        return None
    added = pair["added_p50_ms"]["median"]
    against_stream = _fmt(stream["added_p50_ms"]) if stream else "n/a"
    detail = (
        f"concurrency 1, p50 of the pool minus p50 of httpx (stream: false) in the same run: "
        f"{_fmt(pair['added_p50_ms'])} ms; against httpx with stream: true {against_stream} ms; "
        f"extra client CPU per call {_fmt(pair.get('added_cpu_us'), 1, 0)} us"
    )
    return added, added < 0.5, detail


def _throughput(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    rows = _get(sc, "scaling", "by_instances")
    if not rows:
        return None
    ratios = {n: r["pool_vs_limit"]["median"] for n, r in rows.items()}
    worst = min(ratios.values())
    detail = "; ".join(
        f"N={n}: {_fmt(r['pool_vs_limit'], 100, 1)} % (plain httpx pinned: "
        f"{r['direct_vs_limit']['median'] * 100:.1f} %)"
        for n, r in rows.items()
    )
    return worst * 100, worst >= 0.95, detail


def _unequal(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    ratio = _get(sc, "unequal", "latency_vs_round_robin_p99")
    by = _get(sc, "unequal", "by_strategy") or {}
    if not ratio or ratio.get("median") is None:
        return None
    detail = (
        f"p99 latency_based / p99 round_robin per run: {_fmt(ratio, 1, 3)}; p99 latency_based "
        f"{_fmt(by.get('latency_based', {}).get('p99_ms'), 1, 0)} ms, round_robin "
        f"{_fmt(by.get('round_robin', {}).get('p99_ms'), 1, 0)} ms"
    )
    return ratio["median"], ratio["median"] <= 1 / 3, detail


def _coldstart(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    ratio = _get(sc, "coldstart", "latency_vs_round_robin_p99")
    by = _get(sc, "coldstart", "by_strategy") or {}
    if not ratio or ratio.get("median") is None:
        return None
    lb, rr = by.get("latency_based", {}), by.get("round_robin", {})
    detail = (
        f"every call from initialize() on counted; p99 latency_based / p99 round_robin per run: "
        f"{_fmt(ratio, 1, 3)}; p99 latency_based {_fmt(lb.get('p99_ms'), 1, 0)} ms, round_robin "
        f"{_fmt(rr.get('p99_ms'), 1, 0)} ms; calls served by the slow instance: latency_based "
        f"{_fmt(lb.get('slow_served'), 1, 0)}, round_robin {_fmt(rr.get('slow_served'), 1, 0)}"
    )
    return ratio["median"], ratio["median"] <= 1 / 3, detail


def _failover(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    failure = sc.get("failure")
    if not failure or "failed_total" not in failure:
        return None
    s = failure["summary"]
    detail = (
        f"{failure['failed_total']} of {failure['requests_total']} requests failed over "
        f"{failure['params']['runs']} run(s); marked down {_fmt(s.get('marked_down_after_s'))} s after "
        f"the kill, served again {_fmt(s.get('back_after_s'))} s after the restart"
    )
    return failure["failed_total"], failure["failed_total"] == 0, detail


def _residency(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    res = _get(sc, "residency", "by_strategy")
    if not res or "model_affinity" not in res:
        return None
    mine = res["model_affinity"]
    worst = mine["avoidable_cold_loads"]["max"]
    others = ", ".join(
        f"{k} {v['avoidable_cold_loads']['median']:g}" for k, v in res.items() if k != "model_affinity"
    )
    detail = (
        f"model_affinity: avoidable cold loads per run {_fmt(mine['avoidable_cold_loads'], 1, 0)}, "
        f"all cold loads {_fmt(mine['cold_loads'], 1, 0)}; other strategies (median avoidable): {others}"
    )
    return worst, worst == 0, detail


def _cache_target(
    part: str, metric: str, unit: str, passes: Callable[[float, dict[str, Any]], bool]
) -> Callable[[dict[str, Any]], tuple[Any, bool | None, str] | None]:
    """A target on one metric of a promptcache part: cache_aware over least_loaded."""

    def check(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
        block = _get(sc, "promptcache", part) or {}
        mine, base = block.get("cache_aware"), block.get("least_loaded")
        if not mine or not base:
            return None
        ratio = mine[metric]["median"] / base[metric]["median"]
        detail = (
            f"{part}: {metric} cache_aware {mine[metric]['median']:.3g} {unit}, least_loaded "
            f"{base[metric]['median']:.3g} {unit}; cached prompt tokens {mine['hit_rate']['median']:.0%} "
            f"vs {base['hit_rate']['median']:.0%}; busiest instance "
            f"{mine['max_share_vs_fair']['median']:.2f}x its fair share"
        )
        return ratio, passes(ratio, mine), detail

    return check


def _import(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    imp = _get(sc, "footprint", "import_ms", "gleitzeit_llm")
    if not imp:
        return None
    httpx = _get(sc, "footprint", "import_ms", "httpx")
    first_use = _get(sc, "footprint", "import_ms", "gleitzeit_llm+provider")
    detail = (
        f"fresh interpreter per sample: {_fmt(imp, 1, 1)} ms (best {imp['best']:.1f}); for reference "
        f"import httpx {_fmt(httpx, 1, 1)} ms, import plus first use of OllamaPoolProvider "
        f"{_fmt(first_use, 1, 1)} ms"
    )
    return imp["median"], imp["median"] < 150, detail


def _memory(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    mem = _get(sc, "footprint", "memory")
    if not mem:
        return None
    growth_mb = mem["growth_bytes"] / 1e6
    full = mem["requests"] >= 100_000
    detail = (
        f"RSS {mem['rss_start_bytes'] / 1e6:.1f} -> {mem['rss_end_bytes'] / 1e6:.1f} MB over "
        f"{mem['requests']:,} requests ({mem['failed']} failed), second half "
        f"{mem['growth_second_half_bytes'] / 1e6:+.2f} MB"
        + ("" if full else "; fewer than 100,000 requests, so not judged")
    )
    return growth_mb, (growth_mb < 10.0) if full else None, detail


def _shared_cap(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    modes = _get(sc, "scaleout", "by_mode")
    if not modes:
        return None
    shared, local = modes["shared"], modes["local"]
    c = sc["scaleout"]["params"]["max_concurrent"]
    detail = (
        f"max_concurrent {c}; servers' peak concurrency: shared {shared['peak_concurrency']}, local "
        f"{local['peak_concurrency']}; throughput % of N*c/t: shared {_fmt(shared['vs_limit'], 100, 0)}, "
        f"local {_fmt(local['vs_limit'], 100, 0)}"
    )
    return shared["cap_violations"], shared["cap_violations"] == 0, detail


def _shared_latency(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    lat = _get(sc, "scaleout", "latency")
    if not lat:
        return None
    added = lat["added_p50_ms"]["median"]
    detail = (
        f"concurrency 1, one pool with and one without shared state in the same run: p50 "
        f"{_fmt(lat['shared_p50_ms'], 1, 3)} vs {_fmt(lat['local_p50_ms'], 1, 3)} ms, added "
        f"{_fmt(lat['added_p50_ms'], 1, 3)} ms; added CPU on the calling thread "
        f"{_fmt(lat.get('added_cpu_us'), 1, 0)} us per call"
    )
    if added < 0:
        # Slower without Redis than with it: the machine's noise is larger than the difference
        # (seen at load averages of 12-16 on two cores); the CPU figure is the one to read then.
        return added, None, detail + "; negative: noise larger than the difference, not judged"
    return added, added <= 1.0, detail


def _shared_round_trips(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    lat = _get(sc, "scaleout", "latency")
    if not lat:
        return None
    trips = lat["round_trips_per_call"]["median"]
    detail = f"requests sent to Redis on the calling thread per call: {_fmt(lat['round_trips_per_call'])}"
    return trips, trips <= 2.0 + 1e-9, detail


def _shared_breaker(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
    modes = _get(sc, "scaleout", "by_mode")
    if not modes:
        return None
    shared, local = modes["shared"], modes["local"]
    reach = shared["breaker_reach_all_s"]
    if reach.get("median") is None:
        return None, False, f"the breaker did not open in every process: {shared['breaker_opened_in']}"
    detail = (
        f"first process's trip to the last process's open breaker: shared {_fmt(reach, 1, 3)} s, local "
        f"(each process trips on its own failures) {_fmt(local['breaker_reach_all_s'], 1, 3)} s; failed "
        f"calls at the failing instance: shared {_fmt(shared['failed_calls_at_target'], 1, 0)}, local "
        f"{_fmt(local['failed_calls_at_target'], 1, 0)}"
    )
    return reach["median"], reach["median"] <= 0.25, detail


def _gateway_pairs(sc: dict[str, Any], conc: str) -> dict[str, Any]:
    return _get(sc, "gateway", "by_concurrency", conc, "pairs") or {}


def _gateway_detail(pairs: dict[str, Any], key: str, scale: float) -> str:
    """The same measure for the OpenAI route, the streams and LiteLLM's proxy, where measured."""
    names = {
        "gateway_stream-vs-direct_stream": "streamed",
        "gateway_openai-vs-direct": "/v1 (OpenAI)",
        "gateway_openai_stream-vs-direct_stream": "/v1 streamed",
        "litellm_openai-vs-direct": "LiteLLM proxy /v1",
        "litellm_openai_stream-vs-direct_stream": "LiteLLM proxy /v1 streamed",
    }
    return "; ".join(f"{label} {_fmt(pairs[k][key], scale)}" for k, label in names.items() if k in pairs)


def _gateway(conc: str, key: str, scale: float, unit: str, what: str, met: Callable[[float], bool]) -> Any:
    """The check of one gateway target: the gateway's /api/chat against direct calls."""

    def check(sc: dict[str, Any]) -> tuple[Any, bool | None, str] | None:
        pairs = _gateway_pairs(sc, conc)
        pair = pairs.get("gateway-vs-direct")
        if not pair:
            return None
        value = pair[key]["median"]
        detail = (
            f"{what}, same run: {_fmt(pair[key], scale)} {unit}; {_gateway_detail(pairs, key, scale)} {unit}"
        )
        return value * scale, met(value), detail

    return check


_gateway_latency = _gateway(
    "1",
    "added_p50_ms",
    1,
    "ms",
    "p50 through the gateway's /api/chat minus p50 straight to the server",
    lambda v: v < 1.0,
)
_gateway_throughput = _gateway(
    "64",
    "throughput_ratio",
    100,
    "%",
    "calls/s through the gateway's /api/chat over calls/s straight to the server",
    lambda v: v >= 0.7,
)


CHECKS: dict[str, Callable[[dict[str, Any]], tuple[Any, bool | None, str] | None]] = {
    "routing_100": _routing,
    "added_latency": _added_latency,
    "throughput": _throughput,
    "unequal": _unequal,
    "coldstart": _coldstart,
    "failover": _failover,
    "residency": _residency,
    "cache_ttft": _cache_target("chat", "ttft_p50_ms", "ms", lambda ratio, _: ratio <= 0.5),
    "cache_throughput": _cache_target("chat", "throughput_cps", "calls/s", lambda ratio, _: ratio >= 1.0),
    "cache_skew": _cache_target(
        "skew",
        "ttft_p99_ms",
        "ms",
        lambda ratio, mine: ratio <= 1.0 and mine["max_share_vs_fair"]["median"] <= 1.5,
    ),
    "import": _import,
    "memory": _memory,
    "shared_cap": _shared_cap,
    "shared_latency": _shared_latency,
    "shared_round_trips": _shared_round_trips,
    "shared_breaker": _shared_breaker,
    "gateway_latency": _gateway_latency,
    "gateway_throughput": _gateway_throughput,
}


def evaluate(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for id, check in CHECKS.items():
        title, goal, unit = TARGETS[id]
        try:
            got = check(scenarios)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            got = (None, None, f"could not evaluate: {type(exc).__name__}: {exc}")
        measured, met, detail = got if got is not None else (None, None, "not measured in this run")
        out.append(
            {
                "id": id,
                "title": title,
                "goal": goal,
                "measured": measured,
                "unit": unit,
                "met": met,
                "detail": detail,
            }
        )
    return out
