"""``make bench``: every benchmark on the local stack, one table at the end, results kept.

    .venv/bin/python -m bench        # with the local broker up (make bench starts it); ~5 min on 2 cores

Runs, in order: the ingest benchmark (bench.ingest), the processor throughput benchmark (bench.processors)
and the end-to-end latency benchmark (bench.e2e); each section's own table is printed as it finishes, then
one summary table. Writes bench/results/latest.json (everything measured, with how) and
bench/results/latency.png (bench.chart). A section that fails is reported and the others still run; the
exit status is then 1. How each figure is measured: bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import chart, e2e, harness, ingest, processors

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATEST = RESULTS_DIR / "latest.json"
CHART = RESULTS_DIR / "latency.png"
INGEST_GOAL = 0.5


def _section(name: str, run: Callable[[], dict[str, Any]], table: Callable[[dict[str, Any]], str],
             results: dict[str, Any]) -> None:
    started = time.monotonic()
    try:
        results[name] = run()
    except Exception as exc:  # report it and go on with the other benchmarks
        results[name] = {"error": f"{type(exc).__name__}: {exc}"[:4000]}
        traceback.print_exc()
        print(f"\n{name}: FAILED: {type(exc).__name__}: {str(exc)[:600]}\n", flush=True)
        return
    finally:
        results.setdefault("section_seconds", {})[name] = round(time.monotonic() - started, 1)
    print(table(results[name]) + "\n", flush=True)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def summary(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    ing = results.get("ingest", {})
    if "real" in ing:
        for label, key, closed, opened in (("Stripe HMAC", "stripe", "stripe_closed", "stripe_open"),
                                           ("SNS RSA", "sns", "sns_closed", "sns_open")):
            ratio = ing["ratio_to_noop"][key]
            rows.append((f"ingest {label} + Kafka ack, 1 process", f"{ing['real'][closed]['per_s']:,.0f}/s",
                         f"ratio {ratio:.2f} to no-op ({'meets' if ratio >= INGEST_GOAL else 'below'} goal "
                         f"{INGEST_GOAL}); cpu ratio {ing['cpu_ratio_to_noop'][key]:.2f}"))
            rows.append((f"ingest {label} p50 / p99 at {ing['rate']}/s",
                         f"{ing['real'][opened]['p50_ms']:.1f} / {ing['real'][opened]['p99_ms']:.1f} ms",
                         "open loop, from scheduled send"))
    else:
        rows.append(("ingest", "FAILED", ing.get("error", "not run")[:80]))
    proc = results.get("processors", {})
    if "processor" in proc:
        p = proc["processor"]
        rows.append(("processor reconciled observations, 1 worker, exactly-once", f"{p['per_s']:,.0f}/s",
                     f"ratio {proc['ratio']:.2f} to aiokafka loop ({proc['baseline']['per_s']:,.0f}/s; "
                     f"{'meets' if proc['ratio'] >= proc['goal'] else 'below'} goal {proc['goal']}); "
                     f"cpu ratio {proc.get('cpu_ratio', float('nan')):.2f}"))
        if "processor_at_least_once" in proc:
            alo = proc["processor_at_least_once"]
            rows.append(("processor, at-least-once (a setting)", f"{alo['per_s']:,.0f}/s",
                         f"ratio {alo['ratio']:.2f}; cpu ratio {alo.get('cpu_ratio', float('nan')):.2f}; "
                         f"check {'ok' if alo['check']['ok'] and alo['complete'] else 'FAILED'}"))
        check = p["check"]
        rows.append(("processor output check", "ok" if check["ok"] and p["complete"] else "FAILED",
                     f"{p['distinct_outputs']}/{proc['inputs']} events, {check['repeated_events']} repeated, "
                     f"{check['payments_with_wrong_sequences']} payments with wrong sequences"))
    else:
        rows.append(("processor", "FAILED", proc.get("error", "not run")[:80]))
    space = results.get("processors_key_space", {})
    if "processor" in space:
        p = space["processor"]
        rows.append((f"processor, {space['payments']:,} payments, exactly-once", f"{p['per_s']:,.0f}/s",
                     f"ratio {space['ratio']:.2f} to aiokafka loop ({space['baseline']['per_s']:,.0f}/s); "
                     f"cpu ratio {space.get('cpu_ratio', float('nan')):.2f}; check "
                     f"{'ok' if p['check']['ok'] and p['complete'] else 'FAILED'}"))
    elif "error" in space:
        rows.append(("processor, key space", "FAILED", space["error"][:80]))
    end = results.get("e2e", {})
    for rate in end.get("rates", []):
        p50, p99 = (("≥ " if rate.get(f"e2e_{name}_is_lower_bound") else "") + _ms(rate.get(f"e2e_{name}_ms"))
                    for name in ("p50", "p99"))
        rows.append((f"end to end p50 / p99 at {rate['offered_per_s']:,}/s offered", f"{p50} / {p99}",
                     f"{rate['achieved_per_s']:,.0f}/s accepted, {rate['events_missing']} missing, "
                     f"http p99 {_ms(rate.get('http_p99_ms'))}"))
    if "error" in end:
        rows.append(("end to end", "FAILED", end["error"][:80]))
    for name, mib in results.get("peak_rss_mib", {}).items():
        rows.append((f"peak RSS {name}", "-" if mib is None else f"{mib:,.0f} MiB", "VmHWM at the end of its run"))
    width = max(len(r[0]) for r in rows) + 2
    value_width = max(len(r[1]) for r in rows) + 2
    machine = results["machine"]
    head = (f"paystream bench {results['when']} — {machine['cpus']} cores shared by broker, servers and load "
            f"generators (load average {machine['loadavg_1m_at_start']} at start, "
            f"{machine.get('loadavg_1m_at_end', '?')} at end); {results.get('duration_s', 0):.0f} s")
    lines = [head, "-" * len(head)]
    lines += [f"{name:<{width}}{value:<{value_width}}{how}" for name, value, how in rows]
    return "\n".join(lines)


def peak_memory(results: dict[str, Any]) -> dict[str, float | None]:
    memory: dict[str, float | None] = {}
    end, proc = results.get("e2e", {}), results.get("processors", {})
    for name, mib in end.get("peak_rss_mib", {}).items():
        memory[f"{name} (end-to-end run)"] = mib
    if "processor" in proc:
        memory[f"processor ({proc['inputs']:,} pre-filled)"] = proc["processor"]["peak_rss_mib"]
        memory["bare aiokafka loop"] = proc["baseline"]["peak_rss_mib"]
    memory["fetcher"] = None  # not run: every benchmark delivery is a thick push, nothing to fetch
    return memory


def main(argv: list[str] | None = None) -> int:
    from paystream.logs import configure

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("ingest", "processors", "key-space", "e2e"), action="append",
                        help="run only these sections (repeatable); the default is all")
    args = parser.parse_args(argv)
    configure("warning", "console")
    harness.quiet_client_logs()
    sections = args.only or ["ingest", "processors", "key-space", "e2e"]
    started = time.monotonic()
    results: dict[str, Any] = {
        "command": "make bench  (.venv/bin/python -m bench, local broker up)",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        # Other work on the machine moves every absolute figure: the load average says how busy it was.
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform(),
                    "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
        "how": "bench/README.md",
    }
    if "ingest" in sections:
        _section("ingest", ingest.run, ingest.table, results)
    if "processors" in sections:
        _section("processors", processors.run, processors.table, results)
    if "key-space" in sections:  # the same figures over 100,000 distinct payments
        _section("processors_key_space", processors.run_key_space, processors.table, results)
    if "e2e" in sections:
        _section("e2e", e2e.run, e2e.table, results)
    results["peak_rss_mib"] = peak_memory(results)
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    LATEST.write_text(json.dumps(results, indent=2) + "\n")
    if results.get("e2e", {}).get("rates"):
        chart.write_latency_chart(
            CHART, results["e2e"]["rates"], "paystream: signed push -> event on payments.status.v1",
            f"{results['when']}, {results['machine']['cpus']} cores shared by broker, ingest, processor and "
            f"load; {results['e2e']['seconds_per_rate']:.0f} s per rate. bench/README.md says how.")
    print(summary(results))
    print(f"\nresults: {LATEST.relative_to(Path.cwd()) if LATEST.is_relative_to(Path.cwd()) else LATEST}"
          + (f", chart: {CHART.name}" if CHART.exists() else ""))
    keys = {"key-space": "processors_key_space"}
    failed = [name for name in sections if "error" in results.get(keys.get(name, name), {})]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
