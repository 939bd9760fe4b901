"""PNG plots of one run (matplotlib, the ``bench`` extra). Error bars are the min..max of the runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _err(summaries: list[dict[str, Any]], scale: float = 1.0) -> tuple[list[float], list[list[float]]]:
    meds = [(s.get("median") or 0.0) * scale for s in summaries]
    lows = [max(0.0, m - (s.get("min") or 0.0) * scale) for m, s in zip(meds, summaries, strict=True)]
    highs = [max(0.0, (s.get("max") or 0.0) * scale - m) for m, s in zip(meds, summaries, strict=True)]
    return meds, [lows, highs]


def draw(data: dict[str, Any], out_dir: Path) -> list[str]:
    """Draw every plot the run has data for; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    sc = data["scenarios"]
    written: list[str] = []
    stamp = f"{data['date']} ({data['mode']}), {data['machine']['usable_cores']} cores"

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)

    ov = sc.get("overhead")
    if ov:
        concs = list(ov["by_concurrency"])
        fig, axes = plt.subplots(1, len(concs), figsize=(4.6 * len(concs), 4.2), squeeze=False)
        for ax, conc in zip(axes[0], concs, strict=True):
            clients = ov["by_concurrency"][conc]["clients"]
            names = list(clients)
            x = range(len(names))
            p50, e50 = _err([clients[n]["p50_ms"] for n in names])
            p99, e99 = _err([clients[n]["p99_ms"] for n in names])
            ax.bar([i - 0.2 for i in x], p50, 0.4, yerr=e50, label="p50", capsize=2)
            ax.bar([i + 0.2 for i in x], p99, 0.4, yerr=e99, label="p99", capsize=2)
            ax.set_xticks(list(x), names, rotation=35, ha="right", fontsize=8)
            ax.set_ylabel("latency, ms")
            ax.set_title(f"concurrency {conc}")
            ax.legend(fontsize=8)
        fig.suptitle(f"Overhead per call, zero model time - {stamp}", fontsize=10)
        save(fig, "overhead.png")

    scal = sc.get("scaling")
    if scal:
        rows = scal["by_instances"]
        ns = [int(n) for n in rows]
        fig, ax = plt.subplots(figsize=(6, 4.2))
        ax.plot(ns, [rows[str(n)]["limit_rps"] for n in ns], "k--", label="limit N*c/service_time")
        ax.plot(
            ns, [rows[str(n)]["limit_rps"] * 0.95 for n in ns], ":", color="grey", label="95 % of the limit"
        )
        for key, label in (("direct_rps", "direct httpx (pinned)"), ("pool_rps", "pool")):
            med, err = _err([rows[str(n)][key] for n in ns])
            ax.errorbar(ns, med, yerr=err, marker="o", capsize=3, label=label)
        ax.set_xlabel("instances N")
        ax.set_ylabel("requests per second")
        ax.set_xticks(ns)
        ax.set_title(f"Scaling - {stamp}", fontsize=10)
        ax.legend(fontsize=8)
        save(fig, "scaling.png")

    une = sc.get("unequal")
    if une:
        by = une["by_strategy"]
        names = list(by)
        x = range(len(names))
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
        p50, e50 = _err([by[n]["p50_ms"] for n in names])
        p99, e99 = _err([by[n]["p99_ms"] for n in names])
        ax1.bar([i - 0.2 for i in x], p50, 0.4, yerr=e50, label="p50", capsize=2)
        ax1.bar([i + 0.2 for i in x], p99, 0.4, yerr=e99, label="p99", capsize=2)
        ax1.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
        ax1.set_ylabel("latency, ms")
        ax1.legend(fontsize=8)
        ax1.set_title("latency")
        insts = list(by[names[0]]["share"])
        bottom = [0.0] * len(names)
        for inst in insts:
            vals = [by[n]["share"][inst]["median"] * 100 for n in names]
            label = f"{inst} (slow)" if inst == une["slow_instance"] else inst
            ax2.bar(list(x), vals, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax2.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
        ax2.set_ylabel("share of requests, %")
        ax2.legend(fontsize=8)
        ax2.set_title("share of traffic")
        fig.suptitle(f"Four instances, one ten times slower - {stamp}", fontsize=10)
        save(fig, "unequal.png")

    res = sc.get("residency")
    if res:
        by = res["by_strategy"]
        names = list(by)
        x = range(len(names))
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
        cold, ecold = _err([by[n]["cold_loads"] for n in names])
        avoid, eavoid = _err([by[n]["avoidable_cold_loads"] for n in names])
        ax1.bar([i - 0.2 for i in x], cold, 0.4, yerr=ecold, label="cold loads", capsize=2)
        ax1.bar([i + 0.2 for i in x], avoid, 0.4, yerr=eavoid, label="avoidable", capsize=2)
        ax1.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
        ax1.set_ylabel(f"per {res['params']['requests']} requests")
        ax1.legend(fontsize=8)
        ax1.set_title("cold loads")
        p99, e99 = _err([by[n]["p99_ms"] for n in names])
        ax2.bar(list(x), p99, yerr=e99, capsize=2)
        ax2.set_yscale("log")
        ax2.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
        ax2.set_ylabel("p99 latency, ms (log)")
        ax2.set_title("p99")
        fig.suptitle(f"Three instances, three models, one resident each - {stamp}", fontsize=10)
        save(fig, "residency.png")

    fail = sc.get("failure")
    if fail and fail.get("timeline"):
        fig, ax = plt.subplots(figsize=(9, 4.2))
        tl = fail["timeline"]
        for ok, victim, color, label in (
            (True, False, "tab:blue", "served by the others"),
            (True, True, "tab:orange", f"served by {fail['victim']}"),
            (False, None, "tab:red", "failed"),
        ):
            pts = [p for p in tl if p[2] is ok and (victim is None or p[3] is victim)]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, color=color, label=label)
        ax.axvline(fail["marks"]["kill"], color="red", linestyle="--", label="SIGKILL")
        ax.axvline(fail["marks"]["restart"], color="green", linestyle="--", label="restarted")
        ax.set_yscale("log")
        ax.set_xlabel("arrival, s")
        ax.set_ylabel("latency, ms (log)")
        ax.legend(fontsize=8, loc="upper right")
        ax.set_title(f"One of three instances killed and restarted (first run) - {stamp}", fontsize=10)
        save(fig, "failure.png")

    rt = sc.get("routing")
    if rt:
        rows = rt["by_instances"]
        ns = [int(n) for n in rows]
        fig, ax = plt.subplots(figsize=(6.5, 4.4))
        for strategy in rows[str(ns[0])]:
            ax.plot(ns, [rows[str(n)][strategy]["select"]["best_us"] for n in ns], marker="o", label=strategy)
        ax.axhline(50, color="red", linestyle="--", label="target at 100: 50 us")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("instances")
        ax.set_ylabel("us per Router.select (best of N)")
        ax.legend(fontsize=8)
        ax.set_title(f"Routing cost - {stamp}", fontsize=10)
        save(fig, "routing.png")

    fp = sc.get("footprint")
    if fp and fp.get("memory", {}).get("points"):
        pts = fp["memory"]["points"]
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        ax.plot([p["requests"] for p in pts], [p["rss_bytes"] / 1e6 for p in pts], marker="o")
        base = pts[0]["rss_bytes"] / 1e6
        ax.axhline(base + 10, color="red", linestyle="--", label="start + 10 MB (target)")
        ax.set_ylim(base - 5, base + 15)
        ax.set_xlabel("requests after warm-up")
        ax.set_ylabel("RSS, MB")
        ax.legend(fontsize=8)
        ax.set_title(f"Client memory over {fp['memory']['requests']:,} requests - {stamp}", fontsize=10)
        save(fig, "memory.png")
    return written
