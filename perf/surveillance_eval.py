"""`make surveillance-eval`: the surveillance core over generated order flow with labelled abuse.

Normal flow (market makers, two of them fast; takers; retail limit orders; risk's account state
with each account's own margin) through the real matching engine, on a simulated clock, with every
injector of perf/surveillance_agents.py mixed in at three difficulty levels, over several seeds;
and clean runs (no injector) for the false-positive rate. The core ranks every 500 ms of simulated
time, as the node does.

Reported per level (mean over seeds, and per seed): precision@k and recall@k (k = 10, 20) of the
final queue against the injected accounts, recall per injector, time from an injector's first
abusive action to its first alert, and on clean runs the share of accounts alerted at least once.
Writes perf/results/surveillance-eval.{json,md,png}.

    python -m perf.surveillance_eval [--seeds 5] [--first-seed 101] [--seconds 120] [--out DIR]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import time
from pathlib import Path

from nodes.surveillance.service import RANK_MS
from perf.surveillance_agents import (
    LEVELS, S_NS, Clusterer, Layerer, LeverageJumper, MarketMaker, Market, MomentumIgniter,
    QuoteStuffer, Retail, Spoofer, Taker,
)
from perf.surveillance_sim import MS, Venue

KS = (10, 20)
MAKERS, FAST_MAKERS, TAKERS, RETAIL = 6, 2, 25, 15
INJECTORS = (Spoofer, Layerer, QuoteStuffer, MomentumIgniter, LeverageJumper)


def build(venue: Venue, rng: random.Random, level: str | None, seconds: int):
    market = Market(venue, rng)
    agents = []
    for i in range(MAKERS):
        agents.append(MarketMaker(f"mm{i:02d}", venue, market, rng, fast=i < FAST_MAKERS))
    agents += [Taker(f"tk{i:02d}", venue, market, rng) for i in range(TAKERS)]
    agents += [Retail(f"rt{i:02d}", venue, market, rng) for i in range(RETAIL)]
    if level is not None:
        conf = LEVELS[level]
        latest = max(10, seconds // 3)
        for cls in INJECTORS:
            name = f"x-{cls.kind}"
            agents.append(cls(name, venue, market, rng, level=conf,
                              start_ns=rng.randint(5, latest) * S_NS))
        plan = {"qty": 4 * 10}  # 0.04 BTC long each
        start = rng.randint(5, latest) * S_NS
        for g in range(conf["group"]):
            agents.append(Clusterer(f"x-liq{g}", venue, market, rng, plan=plan, level=conf,
                                    start_ns=start + g * 200 * MS))
    rng.shuffle(agents)  # the order agents act in at equal times: not by kind
    return market, agents


def run(seed: int, level: str | None, seconds: int) -> dict:
    rng = random.Random(seed * 1_000 + (0 if level is None else 1 + list(LEVELS).index(level)))
    venue = Venue()
    market, agents = build(venue, rng, level, seconds)
    margins = {a.name: rng.randint(20, 400) * 1_000_000 for a in agents if not a.abusive}
    end = seconds * S_NS
    queue: list = [(rng.randint(0, 500) * MS, i) for i in range(len(agents))]
    heapq.heapify(queue)
    next_walk, next_risk, next_rank = 0, 5 * S_NS, RANK_MS * MS
    first_alert: dict[str, int] = {}
    started = time.monotonic()
    while queue and queue[0][0] < end:
        now, i = heapq.heappop(queue)
        while next_walk <= now:
            next_walk = market.walk(next_walk)
        while next_rank <= now:
            for alert in venue.core.tick(next_rank):
                if alert["kind"] == "account":
                    first_alert.setdefault(alert["account"], next_rank)
            next_rank += RANK_MS * MS
        if next_risk <= now:
            for name, (qty, _) in sorted(venue.positions.items()):
                if qty and name in margins:
                    venue.account_risk(name, margins[name], now)
            next_risk += 5 * S_NS
        heapq.heappush(queue, (max(agents[i].act(now), now + 1), i))
    final = [it for it in venue.core.tick(end) if it["kind"] == "account"]
    for alert in final:
        first_alert.setdefault(alert["account"], end)
    ranked = [it["account"] for it in venue.core.queue if it["kind"] == "account"]
    positives = {a.name: a for a in agents if a.abusive}
    out = {"seed": seed, "level": level or "clean", "accounts": len(agents),
           "positives": len(positives), "events": venue.core.features.events,
           "wall_s": round(time.monotonic() - started, 2), "top20": ranked[:20]}
    for k in KS:
        hits = sum(1 for name in ranked[:k] if name in positives)
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / len(positives) if positives else None
    normal = [a.name for a in agents if not a.abusive]
    out["false_alert_share"] = sum(1 for n in normal if n in first_alert) / len(normal)
    lags = {}
    per_kind: dict[str, list[int]] = {}
    for name, agent in positives.items():
        per_kind.setdefault(agent.kind, []).append(1 if name in ranked[:20] else 0)
        if agent.started_ns is not None and name in first_alert:
            lags[name] = (first_alert[name] - agent.started_ns) / 1e9
    out["recall@20_by_kind"] = {k: sum(v) / len(v) for k, v in sorted(per_kind.items())}
    out["alerted_share"] = (len(lags) / len(positives)) if positives else None
    out["first_alert_s"] = lags
    return out


def summarize(runs: list[dict]) -> dict:
    levels = {}
    for level in ["easy", "medium", "hard", "clean"]:
        rows = [r for r in runs if r["level"] == level]
        if not rows:
            continue
        s: dict = {"runs": len(rows)}
        for key in [f"precision@{k}" for k in KS] + [f"recall@{k}" for k in KS] + [
                "false_alert_share", "alerted_share"]:
            vals = [r[key] for r in rows if r[key] is not None]
            if vals:
                s[key] = round(statistics.mean(vals), 3)
                s[key + "_min"] = round(min(vals), 3)
        lags = sorted(v for r in rows for v in r["first_alert_s"].values())
        if lags:
            s["first_alert_s_median"] = round(statistics.median(lags), 2)
            s["first_alert_s_p90"] = round(lags[min(len(lags) - 1, int(0.9 * len(lags)))], 2)
            s["first_alert_s_max"] = round(lags[-1], 2)
            s["alerts_within_5s_share"] = round(sum(1 for v in lags if v <= 5) / len(lags), 3)
        kinds: dict[str, list[float]] = {}
        for r in rows:
            for kind, v in r["recall@20_by_kind"].items():
                kinds.setdefault(kind, []).append(v)
        s["recall@20_by_kind"] = {k: round(statistics.mean(v), 2) for k, v in sorted(kinds.items())}
        levels[level] = s
    return levels


def markdown(summary: dict, meta: dict) -> str:
    lines = [
        "# Surveillance evaluation", "",
        f"{meta['seeds']} seeds (from {meta['first_seed']}) x {meta['seconds']} s of simulated "
        "flow per run; "
        f"{MAKERS} market makers ({FAST_MAKERS} fast), {TAKERS} takers, {RETAIL} retail; "
        "injected: spoofer, layering ladder, quote stuffer, momentum igniter, leverage jumper and "
        "a group of liquidation-price clusterers. Easy / medium / hard = abuse 20x / 5x / 2x the "
        "median order (and the levels of perf/surveillance_agents.py LEVELS).", "",
        "| level | P@10 | R@10 | P@20 | R@20 | min P@10 | alerted "
        "| first alert median / p90 / max (s) | alerts <= 5 s | normal accounts alerted |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level, s in summary.items():
        lag = (f"{s['first_alert_s_median']} / {s['first_alert_s_p90']} / {s['first_alert_s_max']}"
               if "first_alert_s_median" in s else "-")
        lines.append(
            f"| {level} | {s.get('precision@10', '-')} | {s.get('recall@10', '-')} | "
            f"{s.get('precision@20', '-')} | {s.get('recall@20', '-')} | "
            f"{s.get('precision@10_min', '-')} | {s.get('alerted_share', '-')} | {lag} | "
            f"{s.get('alerts_within_5s_share', '-')} | {s.get('false_alert_share', '-')} |")
    lines += ["", "Recall@20 per injector:", "",
              "| level | " + " | ".join(sorted(next(iter(summary.values()))["recall@20_by_kind"]
                                              or ["-"])) + " |"]
    kinds = sorted(next(iter(summary.values()))["recall@20_by_kind"])
    lines.append("|---|" + "---|" * max(1, len(kinds)))
    for level, s in summary.items():
        if s["recall@20_by_kind"]:
            lines.append(f"| {level} | " + " | ".join(str(s["recall@20_by_kind"].get(k, "-"))
                                                     for k in kinds) + " |")
    lines += ["", "Time to first alert counts from the injector's first abusive action (its first "
              "order or setting change), on the simulated clock, ranked every "
              f"{RANK_MS} ms as the node ranks. 'normal accounts alerted' is the share of "
              "accounts without an injector that raised an alert at least once in the run.", ""]
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    levels = [lv for lv in ("easy", "medium", "hard") if lv in summary]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("precision@10", "o-"), ("recall@10", "s--"), ("precision@20", "^-"),
                       ("recall@20", "v--")):
        ax.plot(levels, [summary[lv][key] for lv in levels], style, label=key)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("difficulty (abuse size vs median order: 20x, 5x, 2x)")
    ax.set_title("surveillance ranking on injected abuse")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="surveillance-eval")
    p.add_argument("--seeds", type=int, default=5)
    # Seeds 1-3 were looked at while the features' floors and the injectors were designed; the
    # report uses seeds from FIRST_SEED on, which were not.
    p.add_argument("--first-seed", type=int, default=101)
    p.add_argument("--seconds", type=int, default=120, help="simulated seconds per run")
    p.add_argument("--out", default="perf/results")
    args = p.parse_args(argv)
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for level in (*LEVELS, None):
            r = run(seed, level, args.seconds)
            runs.append(r)
            print(f"seed {seed} {r['level']:<6} P@10 {r['precision@10']:.2f} "
                  f"R@10 {r['recall@10'] if r['recall@10'] is not None else '-'} "
                  f"false alerts {r['false_alert_share']:.2f} ({r['wall_s']} s)", flush=True)
    summary = summarize(runs)
    meta = {"seeds": args.seeds, "first_seed": args.first_seed, "seconds": args.seconds}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "surveillance-eval.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "runs": runs}, indent=1))
    text = markdown(summary, meta)
    (out / "surveillance-eval.md").write_text(text)
    plotted = plot(summary, out / "surveillance-eval.png")
    print(text)
    print(f"wrote {out}/surveillance-eval.json, .md" + (", .png" if plotted else
                                                        " (no matplotlib: no plot)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
