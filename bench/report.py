"""The billing bench's report: the printed table, the verdict on each of the issue's
targets, the JSON of every number, and the plot (time against N, log-log)."""

import json
from pathlib import Path

JSON_NAME, PLOT_NAME = "billing.json", "billing.png"
MIB = 1024  # KiB

#: The issue's targets. A target names an N; measured at another (a smaller run), it is
#: judged at the measured N nearest to it, and the verdict says so.
TICK_OVER_FLOOR_MAX, TICK_OVER_FLOOR_AT = 2.5, 1_000_000
LOOP_OVER_TICK_MIN, LOOP_OVER_TICK_AT = 20.0, 100_000
IDLE_MAX_MS = 20.0
#: "Worker memory flat in N": the peak-RSS growth of a tick process over its RSS before
#: the tick grows by at most this much from the smallest N to the largest (MiB): 16 MiB
#: over a million calls is 17 bytes a call, far less than holding anything per call.
MEMORY_GROWTH_MAX_MIB = 16.0
#: "Cost per call constant from 10k to 1M": the largest µs per call over those N is
#: within this factor of the smallest.
COST_SPREAD_MAX, COST_FROM, COST_TO = 1.5, 10_000, 1_000_000
DEFINITIONS = {
    "floor": "median time of a bare UPDATE of the callers' wallets (balance_coins - 10 for "
             "every ongoing call's caller), run in a transaction that is rolled back",
    "tick": "coin_deduction as a worker runs it (run_job, real job and work, own process): "
            "time inside the process from the run's claim to the end of its after-commit "
            "Redis publishing; 'cold' is the first tick on a freshly populated database, "
            "'steady' the median of the next ones",
    "db_seconds": "the claim, the work and the record, up to the commit",
    "publish_seconds": "the after-commit Redis side (a hash per charged call)",
    "rss_delta_mib": "the tick process's peak RSS during the run (VmHWM, reset right before "
                     "it) minus its RSS right before it; the largest over the N's K=1 ticks",
    "loop": "the original per-call loop (bench/baseline.py) on a sample, extrapolated: "
            "time to read every ongoing call + loop time per call x N",
    "shards": "the tick split into K shard jobs, run by K processes started together: "
              "wall time from the first start to the last shard's end; speed-up over the "
              "K=1 steady tick",
    "idle": "the tick on a database with no calls, median of consecutive runs in one process",
    "broke": "one tick at the population's own minute where a fraction of callers have no "
             "coins: their calls end for insufficient_coins and are settled",
    "targets": {"tick_over_floor": f"<= {TICK_OVER_FLOOR_MAX} at N={TICK_OVER_FLOOR_AT:,}",
                "loop_over_tick": f">= {LOOP_OVER_TICK_MIN:g} at N={LOOP_OVER_TICK_AT:,}",
                "idle_ms": f"< {IDLE_MAX_MS:g}",
                "memory": f"rss_delta grows <= {MEMORY_GROWTH_MAX_MIB:g} MiB over the N",
                "cost_per_call": f"max/min µs per call over {COST_FROM:,} <= N <= "
                                 f"{COST_TO:,} <= {COST_SPREAD_MAX}"},
}


# The table ----------------------------------------------------------------------------------

def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def table(results: dict) -> str:
    """One row per N, then the idle tick and the loop's sampling."""
    shard_counts = sorted({s["shards"] for e in results["calls"] for s in e["shards"]})
    columns = ["N", "floor s", "tick cold s", "tick s", "of it Redis s", "tick/floor",
               "loop s*", "loop/tick", "µs/call", "RSS Δ MiB"]
    for k in shard_counts:
        columns += [f"K={k} s", f"K={k} speed-up"]
    columns += ["10% broke s", "ended"]
    rows = [columns]
    for entry in results["calls"]:
        tick, loop, broke = entry["tick"], entry["loop"], entry["broke"]
        row = [f"{entry['calls']:,}", seconds(entry["floor"]["seconds"]),
               seconds(tick["cold_seconds"]), seconds(tick["seconds"]),
               seconds(tick["publish_seconds"]), times(entry["tick_over_floor"]),
               seconds(loop["extrapolated_seconds"]), times(loop["over_tick"]),
               f"{tick['us_per_call']:.1f}", f"{tick['rss_delta_mib']:.1f}"]
        by_count = {s["shards"]: s for s in entry["shards"]}
        for k in shard_counts:
            sharded = by_count.get(k)
            row += [seconds(sharded and sharded["seconds"]),
                    times(sharded and sharded["speedup"])]
        row += [seconds(broke["seconds"]), f"{broke['calls_ended']:,}"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]
    samples = sorted({e["loop"]["sample"] for e in results["calls"]})
    lines.append(f"* per-call loop extrapolated from a sample of "
                 f"{' / '.join(f'{s:,}' for s in samples)} calls per N")
    idle = results["idle"]
    lines.append(f"idle tick (no calls): {idle['median_ms']:.1f} ms, median of "
                 f"{len(idle['ms'])} runs")
    return "\n".join(lines)


# The verdicts -------------------------------------------------------------------------------

def nearest(entries: list[dict], calls: int) -> dict:
    return min(entries, key=lambda e: (abs(e["calls"] - calls), -e["calls"]))


def verdict(name: str, target: str, measured: float, limit: float, *, at_most: bool,
            unit: str = "", note: str = "") -> dict:
    met = measured <= limit if at_most else measured >= limit
    missed_by = measured / limit if at_most else limit / measured
    text = "met" if met else f"missed by {missed_by:.2f}x"
    return {"target": name, "wanted": target, "measured": measured, "unit": unit, "met": met,
            "verdict": text, "note": note}


def where(entry: dict, wanted: int) -> str:
    """Where a target naming N=`wanted` was judged, unless at that N."""
    if entry["calls"] == wanted:
        return ""
    return f"at N={entry['calls']:,}; the target names N={wanted:,}"


def not_measured(name: str, target: str, why: str) -> dict:
    return {"target": name, "wanted": target, "measured": None, "unit": "", "met": None,
            "verdict": "not measured", "note": why}


def verdicts(results: dict) -> list[dict]:
    """Each of the issue's targets: met, or missed by how much."""
    entries = results["calls"]
    found = []
    at = nearest(entries, TICK_OVER_FLOOR_AT)
    found.append(verdict("tick / floor", f"<= {TICK_OVER_FLOOR_MAX}x at N=1M",
                         at["tick_over_floor"], TICK_OVER_FLOOR_MAX, at_most=True, unit="x",
                         note=where(at, TICK_OVER_FLOOR_AT)))
    at = nearest(entries, LOOP_OVER_TICK_AT)
    found.append(verdict("per-call loop / tick", f">= {LOOP_OVER_TICK_MIN:g}x at N=100k",
                         at["loop"]["over_tick"], LOOP_OVER_TICK_MIN, at_most=False, unit="x",
                         note=where(at, LOOP_OVER_TICK_AT)))
    found.append(verdict("idle tick", f"< {IDLE_MAX_MS:g} ms", results["idle"]["median_ms"],
                         IDLE_MAX_MS, at_most=True, unit="ms"))
    wanted = f"RSS delta grows <= {MEMORY_GROWTH_MAX_MIB:g} MiB"
    if len(entries) >= 2:
        small, large = entries[0], entries[-1]
        found.append(verdict("worker memory flat in N", wanted,
                             large["tick"]["rss_delta_mib"] - small["tick"]["rss_delta_mib"],
                             MEMORY_GROWTH_MAX_MIB, at_most=True, unit="MiB",
                             note=f"from N={small['calls']:,} to N={large['calls']:,}"))
    else:
        found.append(not_measured("worker memory flat in N", wanted, "needs two N"))
    costed = [e for e in entries if COST_FROM <= e["calls"] <= COST_TO]
    wanted = f"max/min <= {COST_SPREAD_MAX}x"
    if len(costed) >= 2:
        costs = [e["tick"]["us_per_call"] for e in costed]
        found.append(verdict("cost per call constant", wanted, max(costs) / min(costs),
                             COST_SPREAD_MAX, at_most=True, unit="x",
                             note=f"µs per call over N={costed[0]['calls']:,}.."
                                  f"{costed[-1]['calls']:,}"))
    else:
        found.append(not_measured("cost per call constant", wanted,
                                  f"needs two N in {COST_FROM:,}..{COST_TO:,}"))
    largest = entries[-1]
    for sharded in largest["shards"]:
        found.append({"target": f"scale-out K={sharded['shards']}", "wanted": "measured",
                      "measured": sharded["speedup"], "unit": "x", "met": None,
                      "verdict": f"speed-up {sharded['speedup']:.2f}x over K=1",
                      "note": f"at N={largest['calls']:,}"})
    return found


def verdict_lines(found: list[dict]) -> str:
    lines = []
    for v in found:
        measured = "-" if v["measured"] is None else f"{v['measured']:.2f}{v.get('unit', '')}"
        note = f" ({v['note']})" if v.get("note") else ""
        lines.append(f"{v['target']:<26} {v['wanted']:<30} {measured:>10}  {v['verdict']}{note}")
    return "\n".join(lines)


# The files ----------------------------------------------------------------------------------

def write_json(directory: Path, results: dict) -> Path:
    path = directory / JSON_NAME
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def plot(directory: Path, results: dict) -> Path:
    """billing.png: seconds against N, both log scales; the tick, the floor, the per-call
    loop, and each K > 1 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    entries = results["calls"]
    n = [e["calls"] for e in entries]
    figure, axes = pyplot.subplots(figsize=(7, 5), dpi=120)
    axes.plot(n, [e["tick"]["seconds"] for e in entries], "o-", label="tick (K=1)")
    axes.plot(n, [e["floor"]["seconds"] for e in entries], "s-", label="floor: bare UPDATE")
    axes.plot(n, [e["loop"]["extrapolated_seconds"] for e in entries], "^-",
              label="per-call loop (extrapolated)")
    for k in sorted({s["shards"] for e in entries for s in e["shards"]}):
        points = [(e["calls"], s["seconds"]) for e in entries for s in e["shards"]
                  if s["shards"] == k]
        axes.plot(*zip(*points, strict=True), "D--", label=f"tick, K={k} shards")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("ongoing calls (N)")
    axes.set_ylabel("seconds")
    machine = results["machine"]
    axes.set_title(f"coin_deduction: one billing tick against N\n{machine['nproc']} cores, "
                   f"PostgreSQL {machine['postgres']}, {results['date'][:10]}", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = directory / PLOT_NAME
    figure.savefig(path)
    pyplot.close(figure)
    return path


def require_plotting() -> None:
    """Fail before measuring, not after, without matplotlib."""
    import matplotlib  # noqa: F401
