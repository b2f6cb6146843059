"""The CLI's security commands (#20), kept apart from cluster/cli.py: `perpx limits show ACCOUNT`,
the rate limits in force for an account now, what they are without the market, and why."""

from __future__ import annotations

import asyncio

RULES = ("account_orders", "account_weight", "key_weight", "ip_weight", "exit_floor")


def add_parsers(sub, common) -> None:
    limits = sub.add_parser("limits", help="rate limits in force, and why").add_subparsers(
        dest="action", required=True)
    show = limits.add_parser("show", parents=[common],
                             help="an account's limits now (its own key, or --api-key of an admin)")
    show.add_argument("name")
    show.add_argument("--api-key")
    show.set_defaults(fn=cmd_limits_show)


def cmd_limits_show(args) -> int:
    from cluster.cli import EXIT_OK, emit, with_client

    args.account = None if args.api_key else args.name

    async def run(client, topo):
        ack = await client.limits(args.name)
        emit(ack.detail, args.json, render_limits)
        return EXIT_OK

    return asyncio.run(with_client(args, run))


def render_limits(detail: dict) -> str:
    regime = detail["regime"]
    why = "" if regime == "normal" else (
        f" (on {detail.get('regime_symbol', '?')}: realized volatility "
        f"{detail.get('realized_vol_ppm', '?')} ppm, threshold {detail.get('threshold_ppm', '?')} "
        f"ppm)")
    lines = [f"{detail['account']}: limits for the {regime} regime{why}"
             + ("" if detail.get("enabled", 1) else " (rate limits are off)")]
    for rule in RULES:
        if f"{rule}.limit" not in detail:
            continue
        scale = detail[f"{rule}.scale_ppm"]
        note = "" if scale == 1_000_000 else (
            f"  (x{scale / 1e6:g} of {detail[f'{rule}.base_limit']} while {regime})")
        used = f", {detail[f'{rule}.used']} used" if f"{rule}.used" in detail else ""
        lines.append(f"  {rule:<15} {detail[f'{rule}.limit']:>6} per {detail[f'{rule}.window_ms']} ms,"
                     f" burst {detail[f'{rule}.burst']}{used}{note}")
    return "\n".join(lines)
