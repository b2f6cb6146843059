"""`perpx stress` and `perpx cascade`: the portfolio stress grid of a live account, and the
liquidation-cascade simulator with its sweeps (issue #24). The CLI registers these parsers.

    perpx stress ACCOUNT [--params F] [--json]
    perpx cascade (--snapshot F | --from-cluster) --symbol S --shock -0.08 [--regime R]
                  [--latency N] [--recovery 0.1] [--permanent 0.3] [--depth-scale 0.5] [--out F]
    perpx cascade snapshot --out F                 the running cluster's state as a snapshot
    perpx cascade sweep (--snapshot F | --from-cluster) --symbol S --shocks -0.01,-0.02,...
                  [--regimes calm,crisis] [--latencies 0,1,3] [--depth-scales 1,0.5]
                  [--out-dir D]                    sweep.json and sweep.html (plots: matplotlib)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from decimal import Decimal
from pathlib import Path

import msgspec

from cluster import cascade as cz
from cluster.rules import stress as sg
from cluster.rules.units import UnitError, from_units, to_units

BPS_UNIT = Decimal("0.0001")
PPM_UNIT = Decimal("0.000001")


def _cli():
    from cluster import cli  # the CLI imports this module: import it back lazily

    return cli


def _fraction(text: str, unit: Decimal, what: str) -> int:
    from cluster.cli import CliError

    try:
        return to_units(text, unit, what, "too_precise")
    except UnitError as exc:
        raise CliError(exc.reason, str(exc)) from None


def _list(text: str, unit: Decimal, what: str) -> list[int]:
    return [_fraction(part.strip(), unit, what) for part in text.split(",") if part.strip()]


def _stress_params(args) -> sg.StressParams:
    from cluster.cli import CliError

    try:
        return sg.load_params(args.params)
    except sg.StressError as exc:
        raise CliError(exc.reason, str(exc)) from None


# ------------------------------------------------------------------ perpx stress


def cmd_stress(args) -> int:
    cli = _cli()
    args.account = args.name
    params = _stress_params(args)
    if args.notional:
        return _stress_offline(args, params)
    if not args.name:
        raise cli.CliError("no_account", "give an ACCOUNT (a running cluster's) or --notional")

    async def run(client, topo):
        view = await client.account_view()
        legs = []
        for pos in view.positions:
            if pos.mode == "isolated" or not pos.qty:
                continue  # the grid prices the cross wallet: an isolated position stands alone
            book = await client.book(pos.symbol, depth=args.depth)
            spec = topo.symbols[pos.symbol]
            mark = pos.mark or spec.initial_price
            legs.append(sg.Leg(symbol=pos.symbol, qty=pos.qty, mark=mark,
                               mult=spec.atoms_per_tick_lot, bids=list(book.bids),
                               asks=list(book.asks)))
        result = msgspec.to_builtins(sg.stress(params, legs))
        ladder = sum(p.maintenance_margin for p in view.positions if p.mode != "isolated")
        requirement, source = sg.portfolio_requirement(params, ladder, result["requirement"])
        cross_equity = view.equity - sum(p.isolated_margin + p.unrealized_pnl
                                         for p in view.positions if p.mode == "isolated")
        money = lambda atoms: from_units(atoms, topo.atom)  # noqa: E731
        # the requirement in force: what risk holds the account to (the view's maintenance, the
        # summed ladder in cross mode) and, in portfolio mode, this grid's with the book add-on
        in_force = requirement if view.margin_mode == "portfolio" else ladder
        data = {"account": view.account, "params_version": params.version, "stress": result,
                "ladder_maintenance": ladder, "portfolio_requirement": requirement,
                "portfolio_source": source, "cross_equity": cross_equity,
                "equity_over_stress": cross_equity - result["requirement"],
                "margin_mode": view.margin_mode, "requirement_in_force": in_force,
                "in_force": f"{source} (portfolio mode)" if view.margin_mode == "portfolio"
                else "ladder (cross mode)",
                "equity_over_requirement": cross_equity - in_force,
                "human": {"collateral": topo.collateral,
                          "stress_requirement": money(result["requirement"]),
                          "ladder_maintenance": money(ladder),
                          "cross_equity": money(cross_equity),
                          "equity_over_stress": money(cross_equity - result["requirement"]),
                          "requirement_in_force": money(in_force),
                          "equity_over_requirement": money(cross_equity - in_force)}}
        cli.emit(data, args.json, render_stress)
        return cli.EXIT_OK

    return asyncio.run(cli.with_client(args, run))


def _stress_offline(args, params: sg.StressParams) -> int:
    """The grid for positions given as SYMBOL=NOTIONAL (collateral units, signed), no cluster."""
    cli = _cli()
    topo = cli.load_topology(args)
    legs = []
    for item in args.notional:
        symbol, sep, amount = item.partition("=")
        if not sep or not symbol:
            raise cli.CliError("bad_notional", f"--notional {item!r} is not SYMBOL=AMOUNT")
        try:
            atoms = topo.atoms(amount, f"--notional {symbol}")
        except UnitError as exc:
            raise cli.CliError(exc.reason, str(exc)) from None
        legs.append(sg.Leg(symbol=symbol, qty=atoms, mark=1))
    try:
        result = msgspec.to_builtins(sg.stress(params, legs))
    except sg.StressError as exc:
        raise cli.CliError(exc.reason, str(exc)) from None
    money = lambda atoms: from_units(atoms, topo.atom)  # noqa: E731
    data = {"account": "(given notionals)", "params_version": params.version, "stress": result,
            "human": {"collateral": topo.collateral,
                      "stress_requirement": money(result["requirement"]),
                      "regimes": {g["name"]: money(g["loss"]) for g in result["regimes"]},
                      "diversification_floor": money(result["diversification_floor"])}}
    cli.emit(data, args.json, render_stress)
    return cli.EXIT_OK


def render_stress(d: dict) -> str:
    s = d["stress"]
    h = d["human"]
    lines = [f"account {d['account']}  stress params {d['params_version']}  ({h['collateral']})"]
    if not s["notional"]:
        return lines[0] + "\n  no cross position: nothing to stress"
    lines.append("  regime     loss (atoms)   worst joint move (bps)")
    for g in s["regimes"]:
        mark = " <- binds" if g["name"] == s["binding"] else ""
        moves = " ".join(f"{k} {v:+d}" for k, v in g["worst_move_bps"].items())
        lines.append(f"  {g['name']:<9} {g['loss']:>14}   {moves}{mark}")
    lines.append(f"  diversification floor {s['diversification_floor']}"
                 f"{' <- binds' if s['binding'] == 'floor' else ''}")
    for a in s["liquidity"]:
        lines.append(f"  liquidity {a['symbol']}: walk {a['slippage']}, unfilled {a['unfilled_qty']} "
                     f"lots, add-on {a['addon']}")
    lines.append(f"  stress requirement {h['stress_requirement']} {h['collateral']}")
    if "ladder_maintenance" in h:
        lines.append(f"  ladder {h['ladder_maintenance']}; portfolio mode would use the "
                     f"{d['portfolio_source']}")
        lines.append(f"  cross equity {h['cross_equity']}, {h['equity_over_stress']} over the "
                     "stress requirement")
    if "requirement_in_force" in h:
        lines.append(f"  in force: {d['in_force']}, maintenance {h['requirement_in_force']}; "
                     f"equity {h['equity_over_requirement']} over it")
    return "\n".join(lines)


# ------------------------------------------------------------------ snapshots


async def cluster_snapshot(topo, client_factory, depth: int) -> cz.Snapshot:
    """Every configured account's view (each logged on with its key), every book and mark, the
    ladders; the fund's starting cash and floor from the topology (the SDK has no fund view)."""
    from cluster.protocol import Logon

    accounts = {}
    marks: dict[str, int] = {}
    books = {}
    first = True
    for name, account in sorted(topo.accounts.items()):
        client = client_factory()
        try:
            await client.connect()
            client.take_logon(await client.request(Logon(api_key=account.api_key)))
            if first:
                for symbol in sorted(topo.symbols):
                    books[symbol] = await client.book(symbol, depth=depth)
                first = False
            view = await client.account_view()
        finally:
            await client.close()
        positions, isolated = {}, {}
        for pos in view.positions:
            if not pos.qty:
                continue
            positions[pos.symbol] = (pos.qty, pos.cost)
            if pos.mark:
                marks[pos.symbol] = pos.mark
            if pos.mode == "isolated":
                isolated[pos.symbol] = pos.isolated_margin - pos.cost
        accounts[name] = cz.AccountSnap(balance=view.balance, positions=positions,
                                        isolated=isolated)
    symbols = {}
    for symbol, spec in sorted(topo.symbols.items()):
        book = books[symbol]
        bids, asks = list(book.bids), list(book.asks)
        mark = marks.get(symbol) or (
            (bids[0][0] + asks[0][0]) // 2 if bids and asks else spec.initial_price)
        symbols[symbol] = cz.SymbolSnap(
            mult=spec.atoms_per_tick_lot, mark=mark,
            tiers=[(t.floor, t.max_leverage, t.mmr_ppm) for t in spec.tiers],
            ladder_cap=spec.tiers[-1].cap, forced_fee_ppm=spec.forced_fee_ppm,
            bids=[(p, q) for p, q in bids if p <= mark], asks=[(p, q) for p, q in asks if p >= mark])
    risk, liq = topo.nodes["risk"], topo.nodes["liquidator"]
    return cz.Snapshot(source=f"cluster {topo.name}", symbols=symbols, accounts=accounts,
                       insurance_fund=topo.atoms(risk.insurance_fund, "insurance_fund"),
                       insurance_floor=topo.atoms(liq.insurance_floor, "insurance_floor"))


def load_snapshot(args) -> cz.Snapshot:
    cli = _cli()
    if bool(args.snapshot) == bool(args.from_cluster):
        raise cli.CliError("no_snapshot", "give exactly one of --snapshot FILE or --from-cluster")
    if args.snapshot:
        try:
            return cz.decode_snapshot(Path(args.snapshot).read_bytes())
        except OSError as exc:
            raise cli.CliError("no_snapshot", f"{args.snapshot}: {exc.strerror}") from None
        except cz.CascadeError as exc:
            raise cli.CliError(exc.reason, str(exc)) from None
    from cluster.client import venue_client

    cli.require_cluster(args)  # a stopped cluster is said at once, not after --timeout
    topo = cli.load_topology(args)
    gw = topo.nodes["gateway"]

    async def take():
        return await cluster_snapshot(
            topo, lambda: venue_client(topo, timeout=args.timeout), args.book_depth)

    try:
        return asyncio.run(take())
    except asyncio.TimeoutError:
        raise cli.CliError("timeout", f"no answer from {gw.client} within {args.timeout}s "
                           "(is the cluster up?)") from None


def cmd_band(args) -> int:
    cli = _cli()
    if not 1 <= args.accounts <= 100_000:
        raise cli.CliError("bad_params", "--accounts must be in [1, 100000]")
    snap = cz.linear_band(s_lots=_fraction(args.size, Decimal("0.001"), "--size"),
                          d_lots=_fraction(args.depth, Decimal("0.001"), "--depth"),
                          accounts=args.accounts,
                          fund=_fraction(args.fund, Decimal("0.000001"), "--fund"))
    if snap.symbols["BTC-PERP"].bids[0][1] <= 0:
        raise cli.CliError("bad_params", "--depth must be positive")
    Path(args.out).write_text(json.dumps(msgspec.to_builtins(snap), sort_keys=True) + "\n")
    cli.emit({"snapshot": args.out, "accounts": args.accounts, "sha256": cz.snapshot_digest(snap)},
             args.json)
    return cli.EXIT_OK


def cmd_snapshot(args) -> int:
    cli = _cli()
    args.snapshot, args.from_cluster = None, True
    snap = load_snapshot(args)
    raw = json.dumps(msgspec.to_builtins(snap), sort_keys=True, indent=1)
    Path(args.out).write_text(raw + "\n")
    cli.emit({"snapshot": args.out, "accounts": len(snap.accounts), "symbols": sorted(snap.symbols),
              "sha256": cz.snapshot_digest(snap)}, args.json)
    return cli.EXIT_OK


# ------------------------------------------------------------------ perpx cascade


def cmd_cascade(args) -> int:
    cli = _cli()
    snap = load_snapshot(args)
    stress = _stress_params(args)
    try:
        params = cz.CascadeParams(
            shock_symbol=args.symbol, shock_bps=_fraction(args.shock, BPS_UNIT, "--shock"),
            regime=args.regime, shock_rounds=args.shock_rounds, latency_rounds=args.latency,
            recovery_ppm=_fraction(args.recovery, PPM_UNIT, "--recovery"),
            permanent_ppm=_fraction(args.permanent, PPM_UNIT, "--permanent"),
            depth_scale_ppm=_fraction(args.depth_scale, PPM_UNIT, "--depth-scale"),
            max_rounds=args.max_rounds, close=args.close)
        result = cz.simulate(snap, params, stress)
    except (cz.CascadeError, sg.StressError) as exc:
        raise cli.CliError(exc.reason, str(exc)) from None
    if args.out:
        Path(args.out).write_bytes(cz.encode(result) + b"\n")
    if args.json:
        print(cz.encode(result).decode())
    else:
        print(render_cascade(result))
    return cli.EXIT_OK


def render_cascade(r: dict) -> str:
    s = r["summary"]
    p = r["params"]
    lines = [f"shock {p['shock_symbol']} {p['shock_bps']:+d} bps ({p['regime']}), latency "
             f"{p['latency_rounds']} rounds, recovery {p['recovery_ppm']} ppm/round, permanent "
             f"{p['permanent_ppm']} ppm, depth x{p['depth_scale_ppm'] / 1e6:g}"]
    for symbol, a in s["amplification"].items():
        lines.append(f"  {symbol}: exogenous {a['exogenous_bps']:+d} bps, peak move "
                     f"{a['peak_move_ticks']} ticks, amplification {a['amplification']} "
                     f"(final {a['final_amplification']})")
    lines.append(f"  {s['liquidations']} liquidations of {s['accounts_liquidated']} accounts over "
                 f"{s['rounds']} rounds ({s['restored']} ended with the account restored); notional "
                 f"{s['cascade_notional']} atoms, x{s['notional_amplification']} of round one")
    lines.append(f"  bad debt {s['bad_debt']}, fund {s['insurance_fund_start']} -> "
                 f"{s['insurance_fund_end']} (drawdown {s['fund_drawdown']}), ADL {s['adl_volume']}"
                 f" (overshoot {s['adl_overshoot']})")
    ratios = " ".join(f"{b['round']}:{b['ratio']}" for b in r["branching"][:12])
    lines.append(f"  branching per round: {ratios}{' ...' if len(r['branching']) > 12 else ''}")
    top = list(r["contributions"]["by_account"].items())[:5]
    if top:
        lines.append("  largest contributors (equity taken from others): "
                     + ", ".join(f"{a} {v}" for a, v in top))
    lines.append(f"  money before {s['money']['before']} after {s['money']['after']}")
    return "\n".join(lines)


def cmd_sweep(args) -> int:
    cli = _cli()
    snap = load_snapshot(args)
    stress = _stress_params(args)
    try:
        sp = cz.SweepParams(
            shock_symbol=args.symbol, shocks_bps=_list(args.shocks, BPS_UNIT, "--shocks"),
            regimes=[r.strip() for r in args.regimes.split(",") if r.strip()],
            latencies=[int(x) for x in args.latencies.split(",") if x.strip()],
            depth_scales_ppm=_list(args.depth_scales, PPM_UNIT, "--depth-scales"),
            recovery_ppm=_fraction(args.recovery, PPM_UNIT, "--recovery"),
            permanent_ppm=_fraction(args.permanent, PPM_UNIT, "--permanent"),
            shock_rounds=args.shock_rounds, max_rounds=args.max_rounds, a_max=args.a_max,
            close=args.close)
        for regime in sp.regimes:
            stress.regime(regime)
        result = cz.sweep(snap, sp, stress)
    except ValueError as exc:  # CascadeError, StressError, a bad integer
        raise cli.CliError(getattr(exc, "reason", "bad_params"), str(exc)) from None
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_bytes(cz.encode(result) + b"\n")
    from cluster import cascade_report

    html = cascade_report.write(result, out)
    cli.emit({"json": str(out / "sweep.json"), "html": str(html),
              "critical_shock_bps": [{k: c[k] for k in ("regime", "latency_rounds",
                                                        "depth_scale_ppm", "critical_shock_bps")}
                                     for c in result["curves"]],
              "critical_depth": result["critical_depth"]}, args.json)
    return cli.EXIT_OK


# ------------------------------------------------------------------ parsers


def _command(group, name: str, text: str, example: str, parents):
    """A subcommand as the CLI's own are made: a description, and an example in the epilog."""
    return group.add_parser(name, parents=list(parents), help=text, description=text,
                            epilog="example:\n  " + example,
                            formatter_class=argparse.RawDescriptionHelpFormatter)


def register(sub, common: argparse.ArgumentParser) -> None:
    from cluster.cli import Number  # (the CLI imports this module: loaded by now)

    # every number a range: a bad one is refused by argparse with its reason, before any work
    levels = Number(kind="int", low=1, high=100_000, example="50")
    rounds = Number(kind="int", low=1, high=1_000_000, example="2000")
    share = Number(low=0, high=1, example="0.3")
    positive = Number(low=0, low_open=True, example="5")
    stress = _command(sub, "stress", "a live account's portfolio stress grid (correlation regimes)",
                      "perpx stress alice     # or offline: perpx stress --notional "
                      "BTC-PERP=600000 --notional ETH-PERP=-450000", [common])
    stress.add_argument("name", nargs="?", help="a running cluster's account")
    stress.add_argument("--notional", action="append", default=[], metavar="SYMBOL=AMOUNT",
                        help="offline: a position's signed notional in collateral units "
                             "(repeat), instead of an account")
    stress.add_argument("--api-key", help="log on with this key instead of the account's own")
    stress.add_argument("--params", help="stress parameter file (default: the published one)")
    stress.add_argument("--depth", type=levels, default=50, help="book levels for the liquidity add-on")
    stress.set_defaults(fn=cmd_stress)

    source = argparse.ArgumentParser(add_help=False)
    source.add_argument("--snapshot", help="a snapshot JSON file")
    source.add_argument("--from-cluster", action="store_true", help="snapshot the running cluster")
    source.add_argument("--book-depth", type=levels, default=1000,
                        help="book levels per side read from the cluster (default: 1000)")
    source.add_argument("--params", help="stress parameter file (regimes, scan ranges)")
    engine = argparse.ArgumentParser(add_help=False)
    engine.add_argument("--symbol", default="BTC-PERP", help="the symbol the shock hits")
    engine.add_argument("--shock-rounds", type=Number(kind="int", low=1, high=1000, example="4"),
                        default=1, help="spread the shock over N rounds")
    engine.add_argument("--recovery", type=share, default="0", help="consumed depth refilled per round (0.1)")
    engine.add_argument("--permanent", type=share, default="1", help="share of impact that stays (0.3)")
    engine.add_argument("--max-rounds", type=rounds, default=2000,
                        help="stop a cascade after this many rounds (default: 2000)")
    engine.add_argument("--close", choices=["full", "venue"], default="full",
                        help="full: one walk per liquidated position (the closed-form model); "
                             "venue: the liquidator's engine decides every step")

    cascade = _command(sub, "cascade", "simulate a liquidation cascade over a snapshot",
                       "perpx cascade --from-cluster --shock -0.08 --latency 1",
                       [common, source, engine])
    cascade.add_argument("--shock", type=Number(low=-1, low_open=True, high=1, example="-0.08"),
                         default="-0.08", help="the symbol's exogenous move (-0.08)")
    cascade.add_argument("--regime", default="calm", help="how the other symbols co-move")
    cascade.add_argument("--latency", type=Number(kind="int", low=0, high=1000, example="1"),
                         default=0, help="rounds from trigger to execution")
    cascade.add_argument("--depth-scale", type=positive, default="1", help="every book level x this")
    cascade.add_argument("--out", help="also write the result JSON here")
    cascade.set_defaults(fn=cmd_cascade)
    actions = cascade.add_subparsers(dest="cascade_action")
    band = _command(actions, "band", "write RISK-ANALYTICS 3.4's toy market (a linear band) as a "
                    "snapshot: longs liquidated every $10 below $60,000",
                    "perpx cascade band --size 5 --depth 10 --out band.json", [common])
    band.add_argument("--size", type=positive, default="5", help="BTC per account (s)")
    band.add_argument("--depth", type=positive, default="10", help="BTC bid per $10 level (d); g*lambda = s/d")
    band.add_argument("--accounts", type=Number(kind="int", low=1, high=100_000, example="600"),
                      default=600, help="accounts in the band (600)")
    band.add_argument("--fund", type=Number(low=0, example="100000"), default="0", help="insurance fund, USD")
    band.add_argument("--out", required=True, help="the snapshot file to write")
    band.set_defaults(fn=cmd_band)
    snap = _command(actions, "snapshot", "write the running cluster's state as a snapshot",
                    "perpx cascade snapshot --from-cluster --out now.json", [common, source])
    snap.add_argument("--out", required=True, help="the snapshot file to write")
    snap.set_defaults(fn=cmd_snapshot)
    sweep = _command(actions, "sweep", "shock x regime x latency x depth: curves, critical points",
                     "perpx cascade sweep --snapshot band.json --out-dir sweep",
                     [common, source, engine])
    sweep.add_argument("--shocks", default="-0.01,-0.02,-0.04,-0.08,-0.12",
                       help="exogenous moves, comma-separated fractions")
    sweep.add_argument("--regimes", default="calm,crisis", help="correlation regimes, comma-separated")
    sweep.add_argument("--latencies", default="0,1,3", help="rounds from trigger to execution")
    sweep.add_argument("--depth-scales", default="1,0.5", help="book depth multipliers")
    sweep.add_argument("--a-max", type=positive, default="2", help="amplification defining the critical depth")
    sweep.add_argument("--out-dir", default="cascade-sweep", help="where sweep.json and the HTML go")
    sweep.set_defaults(fn=cmd_sweep)
