"""Turns the raw measurements into a per-target summary and bench/results/results.md."""

from __future__ import annotations

import math
import statistics
from typing import Any

GATEWAY = "gateway-w1"


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else math.nan


def summarize(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Best throughput over the rounds (noise from a shared machine only lowers it), median latencies."""
    out: dict[str, dict[str, Any]] = {}
    for name, info in raw["targets"].items():
        row: dict[str, Any] = {"available": info["available"], "note": info["note"],
                               "peak_rss_mib": info.get("peak_rss_mib")}
        for kind in ("json", "stream"):
            runs = [r for r in raw["saturation"][kind].get(name, []) if "rps" in r]  # not the failed wrk runs
            row[f"{kind}_rps"] = max((r["rps"] for r in runs), default=math.nan)
            row[f"{kind}_errors"] = sum(r["errors"] + r["non_2xx"] for r in runs)
        row["rates"] = {}
        for rate, per_target in raw["fixed_rate"].items():
            runs = [r for r in per_target.get(name, []) if "rps" in r]
            if runs:
                row["rates"][rate] = {
                    "p50_ms": _median([r["p50_ms"] for r in runs]), "p99_ms": _median([r["p99_ms"] for r in runs]),
                    "achieved_rps": _median([r["rps"] for r in runs]),
                    "errors": sum(r["errors"] + r["non_2xx"] for r in runs),
                }
        ttfb = raw["ttfb"].get(name, [])
        row["ttfb_p50_ms"] = _median([t["ttfb_p50_ms"] for t in ttfb])
        row["ttfb_p99_ms"] = _median([t["ttfb_p99_ms"] for t in ttfb])
        row["stream_events_min"] = min((t["events_min"] for t in ttfb), default=0)
        row["stream_all_done"] = all(t["all_done"] for t in ttfb) and bool(ttfb)
        row["open_streams"] = raw["open_streams"].get(name)
        row["sim"] = raw.get("simulator", {}).get(name)
        out[name] = row
    _add_relative(out, raw)
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else math.nan


def _add_relative(out: dict[str, dict[str, Any]], raw: dict[str, Any]) -> None:
    direct = out.get("direct", {})
    floor = out.get("python-floor", {})
    direct_events = (direct.get("open_streams") or {}).get("event_ms") or []
    for row in out.values():
        for kind in ("json", "stream"):
            row[f"{kind}_x_direct"] = _ratio(row[f"{kind}_rps"], direct.get(f"{kind}_rps", math.nan))
            row[f"{kind}_x_floor"] = _ratio(row[f"{kind}_rps"], floor.get(f"{kind}_rps", math.nan))
        for rate, lat in row["rates"].items():
            base = direct.get("rates", {}).get(rate)
            lat["added_p50_ms"] = lat["p50_ms"] - base["p50_ms"] if base else math.nan
            lat["added_p99_ms"] = lat["p99_ms"] - base["p99_ms"] if base else math.nan
        row["added_ttfb_p50_ms"] = row["ttfb_p50_ms"] - direct.get("ttfb_p50_ms", math.nan)
        row["added_ttfb_p99_ms"] = row["ttfb_p99_ms"] - direct.get("ttfb_p99_ms", math.nan)
        events = (row.get("open_streams") or {}).get("event_ms") or []
        depth = min(len(events), len(direct_events))
        lags = [events[k] - direct_events[k] for k in range(depth)]
        # A steady relay adds the same lag to every event; an event held back stands out.
        row["lag_spread_ms"] = max(lags) - min(lags) if lags else math.nan


def _f(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _signed(value: float) -> str:
    return "–" if value != value else f"{value:+.2f}"


def _x(value: float) -> str:
    return "–" if value != value else (f"{value:.2f}×" if value < 10 else f"{value:.0f}×")


def render_md(raw: dict[str, Any], summary: dict[str, dict[str, Any]]) -> str:
    meta = raw["meta"]
    names = [n for n in summary if summary[n]["available"]]
    lines = [
        "# Benchmark: gateway overhead against direct, nginx, the Python floor and LiteLLM",
        "",
        f"Run {meta['started']} ({meta['mode']}), {meta['cpus']} cores, load average {meta['loadavg_start']} at start, "
        f"{meta['loadavg_end']} at end; {meta['rounds']} round(s), targets alternated within each phase. "
        f"Saturation: wrk, {meta['threads']} thread, {meta['connections']} connections, "
        f"{meta['sat_seconds']} s per run. "
        f"Fixed rates: wrk paced by its Lua delay() hook ({meta['rate_seconds']} s per run, {meta['connections']} "
        "connections). Absolute numbers move with the machine's load; the ratios, taken in one run, are the result.",
        "",
        "## Non-streaming",
        "",
        "| target | req/s at saturation | × direct | × Python floor | peak RSS (MiB) | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        r = summary[n]
        lines.append(f"| {n} | {_f(r['json_rps'], 0)} | {_x(r['json_x_direct'])} | {_x(r['json_x_floor'])} | "
                     f"{_f(r['peak_rss_mib'], 1)} | {r['json_errors']} |")
    rates = list(raw["fixed_rate"])
    lines += ["", "Latency at fixed rates, p50 / p99 in ms (added over direct in brackets; "
              "✗ = the target fell short of the asked rate):", "",
              "| target | " + " | ".join(f"{r} req/s" for r in rates) + " |",
              "|---|" + "---:|" * len(rates)]
    for n in names:
        cells = []
        for rate in rates:
            lat = summary[n]["rates"].get(rate)
            if not lat:
                cells.append("skipped")
                continue
            short = " ✗" if lat["achieved_rps"] < 0.95 * float(rate) else ""
            added = "" if n == "direct" else f" ({_signed(lat['added_p50_ms'])} / {_signed(lat['added_p99_ms'])})"
            cells.append(f"{_f(lat['p50_ms'], 2)} / {_f(lat['p99_ms'], 2)}{added}{short}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Streaming (50 events + [DONE] per stream)", "",
              "| target | streams/s at saturation | × direct | × Python floor | TTFB p50 / p99 (ms) | "
              "added TTFB p50 / p99 (ms) | events per stream | errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        r = summary[n]
        added = "–" if n == "direct" else f"{_f(r['added_ttfb_p50_ms'], 3)} / {_f(r['added_ttfb_p99_ms'], 3)}"
        events = f"{r['stream_events_min']}{'' if r['stream_all_done'] else ' (no [DONE])'}"
        lines.append(f"| {n} | {_f(r['stream_rps'], 0)} | {_x(r['stream_x_direct'])} | {_x(r['stream_x_floor'])} | "
                     f"{_f(r['ttfb_p50_ms'], 3)} / {_f(r['ttfb_p99_ms'], 3)} | {added} | {events} | "
                     f"{r['stream_errors']} |")
    lines += ["", f"## {meta['open_streams']:,} concurrent slow streams", "",
              "Streams trickled by nginx's limit_rate; RSS of the target's whole process group while they are "
              "open; 'lag spread' is max − min over the events seen of the lag the target adds to each event "
              "(median over streams, against direct; nginx's limit_rate sends once a second).", "",
              "| target | streams open | time to open (s) | RSS (MiB) | lag spread (ms) |", "|---|---:|---:|---:|---:|"]
    for n in names:
        o = summary[n]["open_streams"]
        if o:
            lines.append(f"| {n} | {o['opened']:,} / {o['asked']:,} | {_f(o['open_s'], 2)} | {_f(o['rss_mib'], 1)} | "
                         f"{_f(summary[n]['lag_spread_ms'], 1)} |")
    lines += ["", "## Event timing through the simulator", ""] + _sim_lines(raw.get("simulator", {}), names)
    sim_delay = raw.get("simulator", {}).get("delay_ms", 20)
    lines += ["", "## Issue 6 targets for the gateway", ""] + _verdicts(summary, rates, sim_delay)
    missing = [n for n in summary if not summary[n]["available"]]
    if missing:
        lines += ["", "## Not measured", ""] + [f"- {n}: {summary[n]['note']}" for n in missing]
    lines += ["", "## Method", ""] + [f"- {m}" for m in meta["method"]]
    return "\n".join(lines) + "\n"


def _sim_lines(sim: dict[str, Any], names: list[str]) -> list[str]:
    if "direct" not in sim:
        return [f"Not measured: {sim.get('note', 'no simulator phase')}."]
    lines = [f"{sim['words']} content events {sim['delay_ms']} ms apart, every write cut in three pieces; "
             f"{sim['streams']} streams per target, medians per event.", "",
             "| target | events | first event (ms) | added first event (ms) | last event (ms) | lag spread (ms) |",
             "|---|---:|---:|---:|---:|---:|"]
    for n in ["direct"] + [n for n in names if n in sim and n != "direct"]:
        p = sim[n]
        ev = p.get("event_ms") or []
        if not ev:
            lines.append(f"| {n} | failed (status {p.get('status')}) | | | | |")
            continue
        lines.append(f"| {n} | {p['events']}{'' if p['all_done'] else ' (no [DONE])'} | {_f(ev[0], 2)} | "
                     f"{_f(p.get('added_first_ms'), 3)} | {_f(ev[-1], 1)} | {_f(p.get('lag_spread_ms'), 2)} |")
    return lines


def _verdicts(summary: dict[str, dict[str, Any]], rates: list[str], sim_delay: float) -> list[str]:
    gw = summary.get(GATEWAY)
    if not gw or not gw["available"]:
        return [f"- not measured: {gw['note'] if gw else GATEWAY + ' not selected'}"]

    def verdict(ok: bool | None, text: str) -> str:
        return f"- {'–' if ok is None else ('met' if ok else 'MISSED')}: {text}"

    def cmp(value: float, limit: float, above: bool = True) -> bool | None:
        return None if value != value else (value >= limit if above else value < limit)

    w2 = summary.get("gateway-w2", {})
    lite = summary.get("litellm", {})
    lat100 = gw["rates"].get("100", {})
    scale = _ratio(w2.get("json_rps", math.nan), gw["json_rps"])
    vs_lite = _ratio(gw["json_rps"], lite.get("json_rps", math.nan))
    rss = (gw.get("open_streams") or {}).get("rss_mib", math.nan)
    sim = gw.get("sim") or {}
    if "lag_spread_ms" in sim:
        held, limit = sim["lag_spread_ms"], sim_delay / 2  # an event held back until the next costs ~delay
        held_text = f"simulator events' extra lag varies by {_f(held, 2)} ms (limit {limit:g} ms)"
    else:
        held, limit = gw["lag_spread_ms"], 100.0  # nginx's limit_rate ticks once a second
        held_text = f"slow-stream events' extra lag varies by {_f(held, 1)} ms (no simulator run)"
    return [
        verdict(cmp(gw["json_x_floor"], 0.5), f"req/s at least half the Python floor's: {_x(gw['json_x_floor'])}"),
        verdict(cmp(vs_lite, 10), f"at least 10× LiteLLM's req/s: {_x(vs_lite)}"),
        verdict(cmp(scale, 1.8), f"two workers close to 2× one: {_x(scale)} (wrk and nginx share the 2 cores)"),
        verdict(cmp(lat100.get("added_p50_ms", math.nan), 1.0, above=False),
                f"added p50 at 100 req/s under 1 ms: {_f(lat100.get('added_p50_ms'), 3)} ms"),
        verdict(cmp(lat100.get("added_p99_ms", math.nan), 3.0, above=False),
                f"added p99 at 100 req/s under 3 ms: {_f(lat100.get('added_p99_ms'), 3)} ms"),
        verdict(cmp(gw["added_ttfb_p50_ms"], 1.0, above=False),
                f"added TTFB p50 under 1 ms: {_f(gw['added_ttfb_p50_ms'], 3)} ms"),
        verdict(None if held != held else gw["stream_events_min"] >= 51 and gw["stream_all_done"] and held < limit,
                f"no event held back: {gw['stream_events_min']} of 51 canned events relayed; {held_text}"),
        verdict(cmp(gw["stream_rps"], 1000), f"≥ 1,000 streams/s on one worker: {_f(gw['stream_rps'], 0)}"),
        verdict(cmp(rss, 300, above=False), f"1,000 open streams under 300 MiB RSS: {_f(rss, 1)} MiB"),
    ]
