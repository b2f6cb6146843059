"""Post-incident views over the audit journals (<run dir>/audit/*.jsonl): one liquidation's whole
path, and a summary of a time window (liquidations, degraded modes, insurance fund, ADL)."""

from __future__ import annotations

import glob
import math
import os
import re
import time
from collections import Counter
from datetime import datetime, timezone

from cluster.audit import Explanation, counterparties_of, read
from cluster.humanize import describe

_RELATIVE = re.compile(r"^-?(\d+)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


MAX_EPOCH_S = 253402300799  # 9999-12-31T23:59:59Z, the last instant an ISO date can name


def parse_time(text: str | None, now_ns: int | None = None) -> int | None:
    """ns since the epoch from ISO-8601, epoch seconds, or an age '15m' / '2h' / '1d' (before now;
    a leading '-' is accepted too)."""
    if text is None:
        return None
    now_ns = now_ns if now_ns is not None else time.time_ns()
    m = _RELATIVE.match(text.strip())
    if m:
        return now_ns - int(m.group(1)) * _UNITS[m.group(2)] * 1_000_000_000
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds) or abs(seconds) > MAX_EPOCH_S:
            raise ValueError(f"{text!r} is not a time (epoch seconds up to {MAX_EPOCH_S:.0f})")
        return int(seconds * 1_000_000_000)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1_000_000_000)


def iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds")


def load(run_dir: str) -> tuple[list[Explanation], dict[str, int]]:
    """Every journal's records in time order, and the lines each file could not give (by name)."""
    records: list[Explanation] = []
    unreadable: dict[str, int] = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "audit", "*.jsonl"))):
        found, bad = read(path)
        records.extend(found)
        if bad:
            unreadable[os.path.basename(path)] = bad
    records.sort(key=lambda r: r.ts_ns)
    return records, unreadable


def _record(r: Explanation) -> dict:
    return {"time": iso(r.ts_ns), "ts_ns": r.ts_ns, "node": r.node, "rule": r.rule,
            "decision": r.decision, "numbers": r.numbers}


def account(records: list[Explanation], name: str, since_ns: int | None = None,
            until_ns: int | None = None, limit: int = 0) -> list[dict]:
    """Every decision the venue journaled about account `name` in the window, oldest first: its
    refused requests and orders, the orders the venue cancelled or resized, its settings and
    transfers, the steps of its liquidations, and its part in others' (backstop, ADL). The newest
    `limit` when given."""
    picked = [r for r in records
              if (since_ns is None or r.ts_ns >= since_ns) and (until_ns is None or r.ts_ns <= until_ns)
              and (r.subject == name or r.numbers.get("account") == name
                   or _counterparty(r.numbers.get("counterparties"), name))]
    return [_record(r) | {"subject": r.subject} for r in picked[-limit if limit else 0:]]


def _counterparty(text, name: str) -> bool:
    """Whether `name` is one of a liquidation step's journaled counterparties."""
    return any(account == name for account, _, _ in counterparties_of(text) or ())


def liquidation(records: list[Explanation], liquidation_id: int) -> dict | None:
    steps = [r for r in records if r.subject == f"liq-{liquidation_id}"]
    if not steps:
        return None
    first = steps[0].numbers
    end = next((r for r in reversed(steps) if r.rule == "liquidation.end"), None)
    closed: Counter[str] = Counter()
    fees = fund = 0
    counterparties: list[str] = []
    for r in steps:
        kind = r.rule.split(".", 1)[1]
        if r.decision == "done" and kind in ("reduce", "backstop", "insurance", "adl"):
            closed[kind] += int(r.numbers.get("qty", 0))
            fees += int(r.numbers.get("fee", 0))
            fund += int(r.numbers.get("fund_delta", 0))
            if r.numbers.get("counterparties"):
                counterparties.append(f"{kind}: {r.numbers['counterparties']}")
    return {
        "liquidation_id": liquidation_id, "account": first.get("account"),
        "symbol": first.get("symbol"), "status": end.decision if end else "active",
        "started": iso(steps[0].ts_ns), "path": [r.rule.split(".", 1)[1] for r in steps],
        "closed_lots": dict(closed), "forced_fees": fees, "insurance_fund_delta": fund,
        "counterparties": counterparties, "steps": [_record(r) for r in steps],
    }


def incident(records: list[Explanation], since_ns: int | None, until_ns: int | None) -> dict:
    window = [r for r in records if (since_ns is None or r.ts_ns >= since_ns)
              and (until_ns is None or r.ts_ns <= until_ns)]
    ids = sorted({int(r.subject[4:]) for r in window if r.subject.startswith("liq-")})
    liquidations = [liquidation(records, i) for i in ids]
    modes = [_record(r) | {"symbol": r.subject} for r in window
             if r.node == "oracle" and r.rule != "oracle.regime"]
    regimes = [_record(r) | {"symbol": r.subject} for r in window if r.rule == "oracle.regime"]
    buffers = [_record(r) | {"symbol": r.subject} for r in window if r.rule == "risk.im_buffer"]
    # risk's own view of the oracle: a symbol reduce-only on a stale mark and back, and funding
    # times settled late, skipped or repeated (each settled once: risk's funding clock)
    mark_ages = [_record(r) | {"symbol": r.subject} for r in window if r.rule == "risk.mark_age"]
    funding_clock = [_record(r) | {"symbol": r.subject} for r in window if r.rule in (
        "risk.funding_late", "risk.funding_missed", "risk.funding_already_settled")]
    funding_remainder = sum(int(r.numbers.get("remainder_to_insurance", 0))
                            for r in window if r.rule == "risk.funding")
    fund_from_liquidations = sum(l["insurance_fund_delta"] for l in liquidations)
    adl = [{"liquidation_id": l["liquidation_id"], "counterparties": c}
           for l in liquidations for c in l["counterparties"] if c.startswith("adl")]
    paused = [_record(r) | {"subject": r.subject} for r in window if r.rule == "liquidation.paused"]
    rejects = Counter(r.rule for r in window if r.decision == "reject")
    venue_cancels = Counter(r.rule for r in window if r.decision in ("cancel", "resize"))
    return {
        "since": iso(since_ns) if since_ns else None, "until": iso(until_ns) if until_ns else None,
        "since_ns": since_ns, "until_ns": until_ns,
        "liquidations": [{k: v for k, v in l.items() if k != "steps"} for l in liquidations],
        "liquidations_by_status": dict(Counter(l["status"] for l in liquidations)),
        "paused_liquidations": paused,
        "oracle_mode_changes": modes, "regime_changes": regimes, "im_buffer_changes": buffers,
        "mark_age_changes": mark_ages, "funding_clock_events": funding_clock,
        "insurance_fund": {"from_liquidations": fund_from_liquidations,
                           "from_funding_remainders": funding_remainder,
                           "total": fund_from_liquidations + funding_remainder},
        "adl_events": adl, "rejects_by_rule": dict(rejects),
        "venue_cancels_by_rule": dict(venue_cancels),
    }


def mode_spells(changes: list[dict], end_ns: int) -> dict[str, list[tuple[str, int, int]]]:
    """Per symbol, the spells its oracle spent outside `normal`: (mode, from ns, to ns), from the
    journaled mode changes ('previous->mode'); a spell still open ends at `end_ns`."""
    spells: dict[str, list[tuple[str, int, int]]] = {}
    current: dict[str, tuple[str, int]] = {}
    for c in sorted(changes, key=lambda c: c["ts_ns"]):
        if "->" not in c["decision"] or c["rule"].startswith("oracle.source_"):
            continue
        symbol, mode = c["symbol"], c["decision"].split("->", 1)[1]
        if symbol in current:
            was, since = current.pop(symbol)
            spells.setdefault(symbol, []).append((was, since, c["ts_ns"]))
        if mode != "normal":
            current[symbol] = (mode, c["ts_ns"])
    for symbol, (mode, since) in current.items():
        spells.setdefault(symbol, []).append((mode, since, max(since, end_ns)))
    return spells


def seconds_text(ns: int) -> str:
    """A span for a person: '850 ms', '12.3 s', '4 min 5 s', '2 h 3 min'."""
    if ns < 1_000_000_000:
        return f"{ns // 1_000_000} ms"
    s = ns / 1e9
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def decision_numbers_text(record: dict, units) -> str:
    """A journaled decision's numbers in trader's units, with the ages a venue never had (-1:
    it was not stale) left out."""
    numbers = {k: v for k, v in record["numbers"].items()
               if not (k.endswith("_ms") and isinstance(v, int) and v < 0) and k != "venue"}
    return describe(units.numbers(record["rule"], numbers, record.get("symbol", "")))


def incident_summary(report: dict, units, now_ns: int) -> list[str]:
    """What happened, for how long, in a few lines: the window, the liquidations and what they
    cost, the time each symbol's oracle spent outside normal, regimes, ADL, refusals."""
    since, until = report.get("since_ns"), report.get("until_ns")
    end_ns = until or now_ns
    span = f" ({seconds_text(end_ns - since)})" if since else ""
    out = [f"- window: {report['since'] or 'the journals start'} .. {report['until'] or 'now'}"
           f"{span}"]
    liqs = report["liquidations"]
    by_status = ", ".join(f"{status} {n}" for status, n in sorted(
        report["liquidations_by_status"].items()))
    fees = sum(l["forced_fees"] for l in liqs)
    out.append(f"- liquidations: {len(liqs)}" + (f" ({by_status}); forced fees "
                                                  f"{units.money(fees)}" if liqs else ""))
    fund = report["insurance_fund"]["total"]
    out.append(f"- insurance fund: {'+' if fund > 0 else ''}{units.money(fund)}")
    spells = mode_spells(report["oracle_mode_changes"], end_ns)
    for symbol, found in sorted(spells.items()):
        total: Counter[str] = Counter()
        for mode, start, stop in found:
            total[mode] += stop - start
        out.append(f"- oracle {symbol}: outside normal {len(found)} time(s), "
                   + ", ".join(f"{mode} {seconds_text(ns)}" for mode, ns in total.items()))
    if not spells:
        out.append("- oracle: normal throughout" if not report["oracle_mode_changes"]
                   else "- oracle: sources changed, the index mode stayed normal")
    regimes = [f"{r['symbol']} {r['decision']} at {r['time'][11:19]}"
               for r in report["regime_changes"]]
    if regimes:
        out.append("- volatility regimes: " + ", ".join(regimes))
    out.append(f"- auto-deleveraging: {len(report['adl_events'])} event(s)")
    refused = sum(report["rejects_by_rule"].values())
    cancels = sum(report["venue_cancels_by_rule"].values())
    out.append(f"- refusals: {refused}; orders the venue cancelled or resized: {cancels}")
    return out


def incident_markdown(report: dict, units, now_ns: int | None = None) -> str:
    """In trader's units (`units`: cluster.humanize.Units): contracts, prices, collateral and
    rates in percent; a summary of what happened for how long first."""
    money = units.money
    lines = [f"# Incident report {report['since'] or 'start'} .. {report['until'] or 'now'}", ""]
    lines += ["## Summary", ""]
    lines += incident_summary(report, units, now_ns if now_ns is not None else time.time_ns())
    lines += ["", "## Liquidations", ""]
    if report["liquidations"]:
        lines += ["| id | account | symbol | status | path | closed (contracts) | forced fees | fund delta |",
                  "|---|---|---|---|---|---|---|---|"]
        for l in report["liquidations"]:
            path = " > ".join(p for p in l["path"] if p != "plan")
            closed = ", ".join(f"{k} {units.qty(v, l['symbol'])}"
                               for k, v in l["closed_lots"].items()) or "-"
            lines.append(f"| {l['liquidation_id']} | {l['account']} | {l['symbol']} | {l['status']} | "
                         f"{path} | {closed} | {money(l['forced_fees'])} | "
                         f"{money(l['insurance_fund_delta'])} |")
    else:
        lines.append("None.")
    lines += ["", "## Oracle modes and regimes", ""]
    changes = report["oracle_mode_changes"] + report["regime_changes"] + \
        report["im_buffer_changes"] + report["mark_age_changes"] + report["funding_clock_events"]
    if changes:
        for c in sorted(changes, key=lambda c: c["ts_ns"]):
            numbers = decision_numbers_text(c, units)
            lines.append(f"- {c['time']} {c['symbol']}: {c['rule']} {c['decision']}"
                         + (f" ({numbers})" if numbers else ""))
    else:
        lines.append("None.")
    fund = report["insurance_fund"]
    lines += ["", "## Insurance fund", "",
              f"- from liquidations: {money(fund['from_liquidations'])}",
              f"- from funding remainders: {money(fund['from_funding_remainders'])}",
              f"- total: {money(fund['total'])}", "", "## Auto-deleveraging", ""]
    symbols = {l["liquidation_id"]: l["symbol"] for l in report["liquidations"]}
    lines += [f"- liquidation {a['liquidation_id']}: "
              + units.fills(a["counterparties"].removeprefix("adl: "), symbols[a["liquidation_id"]])
              for a in report["adl_events"]] or ["None."]
    if report["rejects_by_rule"]:
        lines += ["", "## Rejects", ""]
        lines += [f"- {rule}: {n}" for rule, n in sorted(report["rejects_by_rule"].items())]
    if report["venue_cancels_by_rule"]:
        lines += ["", "## Orders the venue cancelled or resized", ""]
        lines += [f"- {rule}: {n}" for rule, n in sorted(report["venue_cancels_by_rule"].items())]
    return "\n".join(lines) + "\n"
