"""`perpx cascade`: a deterministic liquidation-cascade simulator over a snapshot
(RISK-ANALYTICS.md sections 3.3 to 3.5). Pure: a snapshot and parameters in, a result out, the
same bytes for the same inputs.

Rounds (one round = one liquidation-engine cycle):
  0. the exogenous shock moves each symbol's reference price (the driver by `shock_bps`, the others
     by beta = rho * R_s / R_driver of the chosen correlation regime, cluster/rules/stress.py),
     all at once or spread evenly over `shock_rounds`;
  1. marks = reference - transient impact of the consumed bids + that of the consumed asks;
  2. trigger: the venue's own rule (nodes/liquidator/monitor.py: equity <= MM + forced fee, cross
     wallet or isolated position), newly breached accounts are scheduled `latency_rounds` later;
  3. due liquidations are re-checked (one restored by a bounce is let go, as the liquidator does),
     then closed: each position sold into the residual book, limited at its bankruptcy price
     (cluster/rules/prices.py); what the book cannot take goes to the snapshot's backstop accounts
     at the bankruptcy price, as much as each one's margin carries (the venue's auction,
     cluster/rules/backstop.py), the rest to the insurance fund unless that takes the fund below
     its floor, then to auto-deleveraging in the venue's queue order (cluster/rules/adl.py); a
     cross account left below zero is made whole by the fund;
  4. impact: a walk moves the mark by the depth it consumed (block-shaped book: a level's share
     consumed x its price gap); `permanent_ppm` of each walk's move shifts the reference for good,
     the rest is transient: consumed depth refills by `recovery_ppm` per round (Obizhaeva-Wang);
  5. attribution: a triggered account's parent is the earlier liquidation whose walks took the
     most equity from it (the cascade graph); each liquidation's contribution (Cont-Schaanning's
     ICI) is the equity its walks took from every other account;
  6. conservation: the cash of every account, the fund and the outside liquidity (the book's
     makers) is checked to the atom after every round.

Close policy: "full" closes the whole position in one walk (the closed-form oracle of section 3.4
assumes it); "venue" lets the liquidator's own engine (nodes/liquidator/engine.py) decide every
step, the simulator playing risk and the book (cluster/cascade_venue.py): cancel, reduction chunks
sized to restore maintenance, the backstop accounts, fund or ADL.
Book levels are held as distances from the reference, so the book moves with the exogenous shock
(makers re-quote around the index) but not with its own consumption.
"""

from __future__ import annotations

import hashlib
import json
import math
from fractions import Fraction
from typing import Literal

import msgspec

from cluster.config import SymbolSpec
from cluster.rules import adl, backstop
from cluster.rules import margin as rules_margin
from cluster.rules.ladder import build_ladder, maintenance_margin
from cluster.rules.margin import fee_due, trigger_margin, triggered
from cluster.rules.prices import bankruptcy_price, round_price
from cluster.protocol import AccountRisk
from cluster.rules.stress import BPS, Leg, StressParams, portfolio_margin
from cluster.rules.units import PPM, ceil_div
from nodes.liquidator.monitor import MaintenanceMonitor

INSURANCE = "insurance"
MARKET = "market"  # the outside liquidity: the makers whose resting orders the walks hit
ROUND_NS = 100_000_000
MICRO = 1_000_000  # consumed book depth is kept in millionths of a lot


class CascadeError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------ inputs


class SymbolSnap(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    mult: int  # atoms per tick-lot
    mark: int  # ticks
    tiers: list[tuple[int, int, int]]  # (floor atoms, max leverage, mmr ppm)
    ladder_cap: int
    forced_fee_ppm: int = 0
    default_leverage: int = 1  # an account's leverage where it set none (a backstop's IM)
    bids: list[tuple[int, int]] = msgspec.field(default_factory=list)  # (ticks, lots), best first
    asks: list[tuple[int, int]] = msgspec.field(default_factory=list)


class AccountSnap(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    balance: int  # cross wallet cash, atoms
    positions: dict[str, tuple[int, int]] = msgspec.field(default_factory=dict)  # (lots, cost)
    isolated: dict[str, int] = msgspec.field(default_factory=dict)  # symbol -> isolated cash
    leverage: dict[str, int] = msgspec.field(default_factory=dict)  # symbol -> its setting
    portfolio: bool = False  # the `portfolio` margin mode: the stress grid's maintenance


class Snapshot(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    version: int = 1
    source: str = ""
    symbols: dict[str, SymbolSnap]
    accounts: dict[str, AccountSnap]
    insurance_fund: int
    insurance_floor: int = 0
    backstops: list[str] = msgspec.field(default_factory=list)  # accounts of the auction


class CascadeParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    shock_symbol: str
    shock_bps: int  # signed: -800 = the driver falls 8 %
    regime: str = "calm"
    shock_rounds: int = 1
    latency_rounds: int = 0
    recovery_ppm: int = 0  # share of the consumed depth that refills per round
    permanent_ppm: int = 1_000_000  # share of each walk's move that stays
    depth_scale_ppm: int = 1_000_000  # every book level x this
    max_rounds: int = 2_000
    # "full": one walk per liquidated position (section 3.4's model); "venue": the liquidator's
    # own engine decides every step (chunks of at most these shares, backstop, fund, ADL)
    close: Literal["full", "venue"] = "full"
    position_share_ppm: int = 250_000
    depth_share_ppm: int = 500_000


def decode_snapshot(raw: bytes) -> Snapshot:
    try:
        snap = msgspec.json.decode(raw, type=Snapshot)
    except msgspec.DecodeError as exc:
        raise CascadeError("bad_snapshot", f"snapshot: {exc}") from None
    check_snapshot(snap)
    return snap


def check_snapshot(snap: Snapshot) -> None:
    for name, sym in snap.symbols.items():
        if sym.mult <= 0 or sym.mark <= 0:
            raise CascadeError("bad_snapshot", f"{name}: mult and mark must be positive")
        for side, levels in (("bids", sym.bids), ("asks", sym.asks)):
            for price, qty in levels:
                if price <= 0 or qty < 0:
                    raise CascadeError("bad_snapshot", f"{name} {side}: level ({price}, {qty})")
            prices = [p for p, _ in levels]
            if prices != sorted(prices, reverse=side == "bids") or len(set(prices)) != len(prices):
                raise CascadeError("bad_snapshot", f"{name} {side}: levels must be best first")
        if sym.bids and sym.bids[0][0] > sym.mark or sym.asks and sym.asks[0][0] < sym.mark:
            raise CascadeError("bad_snapshot", f"{name}: the book crosses the mark {sym.mark}")
        if sym.default_leverage < 1:
            raise CascadeError("bad_snapshot", f"{name}: default_leverage must be >= 1")
        try:
            build_ladder([(f, lev, mmr, None) for f, lev, mmr in sym.tiers], sym.ladder_cap)
        except ValueError as exc:
            raise CascadeError("bad_snapshot", f"{name}: ladder: {exc}") from None
    for name, acct in snap.accounts.items():
        if name in (INSURANCE, MARKET):
            raise CascadeError("bad_snapshot", f"account name {name!r} is reserved")
        for symbol in [*acct.positions, *acct.isolated]:
            if symbol not in snap.symbols:
                raise CascadeError("bad_snapshot", f"{name}: unknown symbol {symbol!r}")
        for symbol, lev in acct.leverage.items():
            if symbol not in snap.symbols or lev < 1:
                raise CascadeError("bad_snapshot", f"{name}: leverage {symbol!r}: {lev}")
    for name in snap.backstops:
        if name not in snap.accounts:
            raise CascadeError("bad_snapshot", f"backstop {name!r} is not an account of the "
                               "snapshot")


def check_params(params: CascadeParams, snap: Snapshot, stress: StressParams) -> None:
    if params.shock_symbol not in snap.symbols:
        raise CascadeError("unknown_symbol", f"shock symbol {params.shock_symbol!r} is not in "
                           f"the snapshot ({', '.join(sorted(snap.symbols))})")
    stress.regime(params.regime)  # raises StressError(unknown_regime)
    if not -BPS < params.shock_bps < BPS or params.shock_bps == 0:
        raise CascadeError("bad_params", f"shock_bps {params.shock_bps} not in (-10000, 10000) \\ 0")
    for field in ("recovery_ppm", "permanent_ppm"):
        if not 0 <= getattr(params, field) <= PPM:
            raise CascadeError("bad_params", f"{field} not in [0, 1000000]")
    if params.depth_scale_ppm < 0 or params.latency_rounds < 0 or params.shock_rounds < 1:
        raise CascadeError("bad_params", "depth scale and latency >= 0, shock_rounds >= 1")
    if not 1 <= params.max_rounds <= 100_000:
        raise CascadeError("bad_params", "max_rounds in [1, 100000]")
    if not 0 < params.position_share_ppm <= PPM or not 0 < params.depth_share_ppm <= PPM:
        raise CascadeError("bad_params", "position and depth shares in (0, 1000000]")


def spec_of(name: str, sym: SymbolSnap) -> SymbolSpec:
    """The few fields of a SymbolSpec the venue's trigger rule reads; the rest are neutral."""
    from decimal import Decimal

    tiers = build_ladder([(f, lev, mmr, None) for f, lev, mmr in sym.tiers], sym.ladder_cap)
    return SymbolSpec(
        name=name, tick_size=Decimal(1), lot_size=Decimal(1), atoms_per_tick_lot=sym.mult,
        min_qty=1, max_qty=2**62, max_notional=2**62, band_ppm=PPM, protection_ppm=PPM,
        maker_fee_ppm=0, taker_fee_ppm=0, forced_fee_ppm=sym.forced_fee_ppm,
        default_leverage=sym.default_leverage, max_leverage=tiers[0].max_leverage, tiers=tiers,
        initial_price=sym.mark, volatility_ppm=0, funding_interval_s=1, funding_cap_e9=0,
        interest_e9=0, im_buffer_ppm={"normal": PPM}, impact_notional=0, vol_window_s=1,
        vol_threshold_ppm=0)


# ------------------------------------------------------------------ state


class Acct:
    __slots__ = ("name", "balance", "positions", "isolated", "portfolio")

    def __init__(self, name: str, balance: int, positions=None, isolated=None,
                 portfolio: bool = False) -> None:
        self.name = name
        self.balance = balance
        self.portfolio = portfolio
        self.positions: dict[str, list[int]] = {s: [q, c] for s, (q, c) in (positions or {}).items() if q}
        self.isolated: dict[str, int] = dict(isolated or {})

    def risk(self) -> AccountRisk:
        return AccountRisk(account=self.name, balance=self.balance,
                           positions={s: (q, c) for s, (q, c) in sorted(self.positions.items())},
                           isolated={s: c for s, c in sorted(self.isolated.items())
                                     if s in self.positions}, portfolio=self.portfolio)


class Side:
    """One side of a book as distances from the reference price, with consumed depth in
    micro-lots (integers: refills round the consumed depth down, so a book heals in a finite
    number of rounds). Walks consume from the front, so consumed levels are a prefix."""

    __slots__ = ("offsets", "gaps", "depth", "consumed", "used", "weight", "denominator")

    def __init__(self, levels: list[tuple[int, int]], mark: int, sign: int, scale_ppm: int) -> None:
        self.offsets: list[int] = []
        self.gaps: list[int] = []
        self.depth: list[int] = []
        prev = 0
        for price, qty in levels:
            qty = qty * scale_ppm // PPM
            if qty <= 0:
                continue  # an emptied level: its gap merges into the next one
            offset = (mark - price) * sign
            self.offsets.append(offset)
            self.gaps.append(offset - prev)
            self.depth.append(qty)
            prev = offset
        self.consumed = [0] * len(self.depth)
        self.used = 0
        # transient move = sum(consumed_i * gap_i / depth_i): integer weights over one denominator
        self.denominator = math.lcm(*self.depth) if self.depth else 1
        self.weight = [g * (self.denominator // d) for g, d in zip(self.gaps, self.depth)]

    def transient(self) -> Fraction:
        consumed, weight = self.consumed, self.weight
        return Fraction(sum(consumed[i] * weight[i] for i in range(self.used)),
                        self.denominator * MICRO)

    def scale_consumed(self, factor: Fraction) -> None:
        num, den = factor.numerator, factor.denominator
        for i in range(self.used):
            self.consumed[i] = self.consumed[i] * num // den


class Book:
    __slots__ = ("mark0", "ref", "bids", "asks", "mult", "spec", "_mark")

    def __init__(self, name: str, sym: SymbolSnap, scale_ppm: int) -> None:
        self.mark0 = sym.mark
        self.ref = Fraction(sym.mark)
        self.bids = Side(sym.bids, sym.mark, 1, scale_ppm)
        self.asks = Side(sym.asks, sym.mark, -1, scale_ppm)
        self.mult = sym.mult
        self.spec = spec_of(name, sym)
        self._mark: tuple[Fraction, int] | None = None

    def mark_exact(self) -> Fraction:
        if self._mark is None:
            exact = self.ref - self.bids.transient() + self.asks.transient()
            self._mark = (exact, max(1, round(exact)))
        return self._mark[0]

    def mark(self) -> int:
        self.mark_exact()
        return self._mark[1]

    def shift(self, move: Fraction) -> None:
        self.ref += move
        self._mark = None

    def walk(self, side: int, qty: int, limit: int) -> tuple[list[tuple[int, int]], Fraction]:
        """Fill up to `qty` lots closing on `side` (-1 sells into bids, +1 buys from asks), never
        beyond `limit`; fills at whole ticks against the taker. (fills, mark move in ticks)."""
        book = self.bids if side < 0 else self.asks
        before = self.mark_exact()
        fills: list[tuple[int, int]] = []
        need = qty
        for i, offset in enumerate(book.offsets):
            if not need:
                break
            exact = self.ref + side * offset  # sell: ref - offset, buy: ref + offset
            price = exact.__floor__() if side < 0 else exact.__ceil__()
            if (side < 0 and price < limit) or (side > 0 and price > limit) or price <= 0:
                break
            take = min(need, (book.depth[i] * MICRO - book.consumed[i]) // MICRO)
            if take <= 0:
                continue
            book.consumed[i] += take * MICRO
            book.used = max(book.used, i + 1)
            need -= take
            fills.append((price, take))
        self._mark = None
        return fills, self.mark_exact() - before

    def levels(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The residual book in absolute ticks and whole lots, best first (what the liquidator's
        book mirror is told)."""
        out = []
        for side, sign in ((self.bids, -1), (self.asks, 1)):
            rows = []
            for i, offset in enumerate(side.offsets):
                free = (side.depth[i] * MICRO - side.consumed[i]) // MICRO
                exact = self.ref + sign * offset
                price = exact.__floor__() if sign < 0 else exact.__ceil__()
                if free > 0 and price > 0:
                    rows.append((price, free))
            out.append(rows)
        return out[0], out[1]

    @property
    def mirror(self) -> "BookView":
        return BookView(self)

    def keep_permanent(self, side: int, move: Fraction, permanent_ppm: int) -> None:
        """Move `permanent_ppm` of a walk's mark move into the reference, taking it out of the
        consumed depth (the transient part), so the mark itself does not change here."""
        keep = move * permanent_ppm / PPM
        if not keep:
            return
        book = self.bids if side < 0 else self.asks
        t = book.transient()
        book.scale_consumed((t - abs(keep)) / t)
        self.shift(keep)

    def recover(self, recovery_ppm: int) -> None:
        if recovery_ppm:
            factor = Fraction(PPM - recovery_ppm, PPM)
            self.bids.scale_consumed(factor)
            self.asks.scale_consumed(factor)
            self._mark = None


class BookView:
    """The residual book as the liquidator's mirror shows it ({price: lots} per side), read when
    the monitor prices a portfolio account's liquidity add-on."""

    __slots__ = ("book",)

    def __init__(self, book: Book) -> None:
        self.book = book

    @property
    def bids(self) -> dict[int, int]:
        return dict(self.book.levels()[0])

    @property
    def asks(self) -> dict[int, int]:
        return dict(self.book.levels()[1])


class Liq:
    __slots__ = ("id", "key", "account", "triggered", "executed", "parent", "parent_weight",
                 "status", "qty", "book_notional", "insurance_qty", "adl_qty", "bad_debt",
                 "inflicted", "fee", "deficit_covered", "backstop_qty")

    def __init__(self, liq_id: int, key: str, triggered: int) -> None:
        self.id = liq_id
        self.key = key
        self.account = key.split(":")[0]
        self.triggered = triggered
        self.executed = -1
        self.parent = 0
        self.parent_weight = 0
        self.status = "pending"
        self.qty: dict[str, int] = {}
        self.book_notional = 0
        self.insurance_qty = 0
        self.backstop_qty = 0
        self.adl_qty = 0
        self.bad_debt = 0
        self.inflicted = Fraction(0)
        self.fee = 0
        self.deficit_covered = 0


# ------------------------------------------------------------------ the simulator


class Cascade:
    def __init__(self, snap: Snapshot, params: CascadeParams, stress: StressParams) -> None:
        check_snapshot(snap)
        check_params(params, snap, stress)
        self.params = params
        self.books = {s: Book(s, snap.symbols[s], params.depth_scale_ppm) for s in sorted(snap.symbols)}
        self.stress = stress
        self.monitor = MaintenanceMonitor({s: b.spec for s, b in self.books.items()}, stress,
                                          books={s: b.mirror for s, b in self.books.items()})
        self.accounts = {n: Acct(n, a.balance, a.positions, a.isolated, a.portfolio)
                         for n, a in sorted(snap.accounts.items())}
        self.insurance = Acct(INSURANCE, snap.insurance_fund)
        self.backstops = sorted(set(snap.backstops))
        self.leverage = {n: dict(a.leverage) for n, a in snap.accounts.items()}
        self.backstop_takeovers: list[dict] = []  # (round, liquidation, backstop, symbol, lots)
        self.round = 0
        self.market = Acct(MARKET, 0)
        self.floor = snap.insurance_floor
        self.fund_start = snap.insurance_fund
        regime = stress.regime(params.regime)
        self.exo_bps = {s: stress.beta_bps(regime, params.shock_symbol, s, params.shock_bps)
                        for s in self.books}
        self.exo_total = {s: Fraction(b.mark0 * self.exo_bps[s], BPS) for s, b in self.books.items()}
        self.liqs: list[Liq] = []
        self.by_key: dict[str, Liq] = {}  # active (pending) liquidation per key
        self.pending: dict[int, list[Liq]] = {}
        # attribution: the walks (liquidation id, symbol, mark move) of this round and the last
        self.walks: list[tuple[int, str, Fraction]] = []
        self.recent: list[tuple[int, str, Fraction]] = []
        self.oi = {s: [0, 0] for s in self.books}  # participants' long and short lots
        for acct in self.accounts.values():
            for s, (q, _) in acct.positions.items():
                self.oi[s][0 if q > 0 else 1] += abs(q)
        self.rounds: list[dict] = []
        self.adl_volume = 0
        self.adl_haircut = 0
        self.adl_shortfall = 0
        self.bad_debt = 0
        self.fund_min = snap.insurance_fund
        self.unresolved: list[dict] = []
        self.cash0 = self.cash()
        self.venue = None
        if params.close == "venue":
            from cluster.cascade_venue import VenueCloser
            from nodes.liquidator.engine import LiquidatorConf

            self.venue = VenueCloser(self, LiquidatorConf(
                insurance_floor=self.floor, position_share_ppm=params.position_share_ppm,
                depth_share_ppm=params.depth_share_ppm, max_mark_age_ns=2**62,
                pause_when_degraded=False))
        for acct in self.accounts.values():
            if self.venue is not None:
                self.venue.sync_account(acct)
            else:
                self.monitor.on_account(acct.risk())

    # ---------------------------------------------------------------- money

    def cash(self) -> int:
        """Every atom in the system: accounts (cross and isolated cash), the fund, the makers."""
        return sum(a.balance + sum(a.isolated.values())
                   for a in (*self.accounts.values(), self.insurance, self.market))

    def settle(self, acct: Acct, symbol: str, lots: int, price: int) -> None:
        """`lots` (signed: + buys) at `price`: cash moves, the position's cost follows (closing
        part removes its proportional share, truncated toward zero, as the ledger does)."""
        mult = self.books[symbol].mult
        amount = lots * price * mult
        if symbol in acct.isolated and symbol in acct.positions:
            acct.isolated[symbol] -= amount
        else:
            acct.balance -= amount
        qty, cost = acct.positions.get(symbol, [0, 0])
        new = qty + lots
        if acct.name in self.accounts:
            oi = self.oi[symbol]
            oi[0] += max(0, new) - max(0, qty)
            oi[1] += max(0, -new) - max(0, -qty)
        if qty and (qty > 0) != (lots > 0):  # reduces (and maybe flips)
            closed = min(abs(lots), abs(qty))
            cost -= int(Fraction(cost * closed, abs(qty)))
            if abs(lots) > abs(qty):
                cost = new * price * mult
        else:
            cost += amount
        if new:
            acct.positions[symbol] = [new, cost]
        else:
            acct.positions.pop(symbol, None)
            if symbol in acct.isolated:  # an isolated position closed: its cash goes home
                acct.balance += acct.isolated.pop(symbol)

    def value(self, acct: Acct, symbol: str) -> int:
        qty, _ = acct.positions[symbol]
        return qty * self.books[symbol].mark() * self.books[symbol].mult

    def equity(self, acct: Acct) -> int:
        return acct.balance + sum(self.value(acct, s) for s in acct.positions
                                  if s not in acct.isolated)

    def fund_equity(self) -> int:
        return self.equity(self.insurance)

    def available(self, acct: Acct) -> int:
        """What a cross wallet can still commit, as risk works it out: equity less the IM of its
        cross positions (the ladder's leverage rule, the normal regime's buffer: a snapshot
        carries no regime; a portfolio account's, the grid's initial requirement when higher,
        without the add-on, as risk), no resting orders in a snapshot."""
        im = mm = 0
        legs = []
        for s, (qty, _) in sorted(acct.positions.items()):
            if s not in acct.isolated:
                spec = self.books[s].spec
                value = self.value(acct, s)
                setting = self.leverage[acct.name].get(s) or spec.default_leverage
                im += rules_margin.initial_margin(
                    value, rules_margin.effective_leverage(setting, spec.tiers, value), PPM)
                if acct.portfolio:
                    mm += maintenance_margin(spec.tiers, value)
                    legs.append(Leg(symbol=s, qty=qty, mark=self.books[s].mark(),
                                    mult=self.books[s].mult))
        if legs:
            im = portfolio_margin(self.stress, legs, mm, im, explain=False).initial
        return self.equity(acct) - im

    def backstop_takers(self, liq: Liq, acct: Acct, symbol: str, lots: int, price: int
                        ) -> list[tuple[str, int, int]]:
        """The venue's backstop auction (cluster/rules/backstop.py) over the snapshot's backstop
        accounts, valued at the simulated mark: each takes what its margin carries at `price`."""
        book = self.books[symbol]
        side = 1 if acct.positions[symbol][0] > 0 else -1
        notional = lots * price * book.mult
        bidders = []
        for name in self.backstops:
            bs = self.accounts[name]  # (the ledger's list, the liquidated one too, as it does)
            setting = self.leverage[name].get(symbol) or book.spec.default_leverage
            bidders.append(backstop.Bidder(
                name=name, available=self.available(bs),
                leverage=rules_margin.effective_leverage(setting, book.spec.tiers, notional),
                cross=symbol not in bs.isolated))
        taken = []
        for name, take in backstop.auction(bidders, lots, price, book.mark(), side, book.mult,
                                           PPM):
            self.transfer(acct, self.accounts[name], symbol, take, price)
            liq.backstop_qty += take
            liq.qty[symbol] = liq.qty.get(symbol, 0) + side * take  # (signed: what was held)
            self.backstop_takeovers.append({"round": self.round, "liquidation": liq.id,
                                            "backstop": name, "symbol": symbol, "qty": take,
                                            "price": price})
            if self.venue is None:
                self.monitor.on_account(self.accounts[name].risk())
            taken.append((name, take, price))
        return taken

    def cover_deficit(self, acct: Acct, liq: Liq) -> None:
        """As the ledger: a cross account with no cross position left and a negative wallet is
        made whole by the fund; an isolated position closed below zero likewise."""
        if acct.balance < 0 and not any(s not in acct.isolated for s in acct.positions):
            liq.deficit_covered += -acct.balance
            self.insurance.balance += acct.balance
            acct.balance = 0

    # ---------------------------------------------------------------- rounds

    def run(self) -> dict:
        p = self.params
        peak = {s: Fraction(0) for s in self.books}
        quiet = 0
        t = 0
        for t in range(p.max_rounds):
            now = t * ROUND_NS
            self.round = t
            if t < p.shock_rounds:
                for s, b in self.books.items():
                    b.shift(self.exo_total[s] / p.shock_rounds)
            marks = {s: b.mark() for s, b in self.books.items()}
            for s, m in marks.items():
                self.monitor.on_mark(s, m)
                self.monitor.on_book(s)  # (a portfolio account's add-on walks the residual book)
                move = Fraction(self.books[s].mark0 - m)
                peak[s] = max(peak[s], move if self.exo_total[s] <= 0 else -move)
            new = self.trigger(t, now)
            self.walks = []
            executed = self.execute(t, now)
            self.recent = self.walks
            for b in self.books.values():
                b.recover(p.recovery_ppm)
            self.fund_min = min(self.fund_min, self.fund_equity())
            held = self.cash()
            if held != self.cash0:
                raise AssertionError(f"round {t}: money not conserved: {held} != {self.cash0}")
            self.rounds.append({"round": t, "marks": marks, "triggered": len(new),
                                "executed": [liq.id for liq in executed],
                                "fund": self.insurance.balance})
            after = {s: b.mark() for s, b in self.books.items()}
            still = not new and not executed and not any(self.pending.values()) and after == marks
            quiet = quiet + 1 if still else 0
            if t + 1 >= p.shock_rounds and quiet:
                break
        return self.result(peak, t + 1)

    def new_liq(self, key: str, t: int) -> Liq:
        liq = Liq(len(self.liqs) + 1, key, t)
        self.parent_of(liq)
        self.liqs.append(liq)
        return liq

    def trigger(self, t: int, now: int) -> list[Liq]:
        if self.venue is not None:
            return self.venue.trigger(t, now)
        new = []
        for alert in sorted(self.monitor.check(now), key=lambda a: a.account):
            if alert.account in self.by_key:
                continue
            liq = self.new_liq(alert.account, t)
            self.by_key[liq.key] = liq
            self.pending.setdefault(t + self.params.latency_rounds, []).append(liq)
            new.append(liq)
        return new

    def note_bad_debt(self, liq: Liq, equity: int) -> None:
        """Bad debt: what the account owes beyond its margin at the mark it is closed at (the
        fund or ADL carries it, whichever path the remainder takes)."""
        if equity < 0:
            liq.bad_debt = -equity
            self.bad_debt += -equity

    def execute(self, t: int, now: int) -> list[Liq]:
        if self.venue is not None:
            return self.venue.execute(t, now)
        done = []
        for liq in self.pending.pop(t, []):
            del self.by_key[liq.key]
            account, _, symbol = liq.key.partition(":")
            acct = self.accounts[account]
            if symbol:
                if symbol not in acct.positions:
                    liq.status = "gone"
                    continue
                equity, mm, fee = self.monitor.assess_isolated(account, symbol)
                symbols = [symbol]
            else:
                equity, mm, fee = self.monitor.assess(account)
                symbols = [s for s in acct.positions if s not in acct.isolated]
            if not triggered(equity, mm, fee) or not symbols:  # the re-check: a bounce restored it
                liq.status = "restored"
                self.monitor.below.pop(liq.key, None)
                continue
            liq.executed = t
            liq.status = "closed"
            self.note_bad_debt(liq, equity)
            # largest position first, as the liquidator orders a cross account's symbols
            for s in sorted(symbols, key=lambda s: (-abs(self.value(acct, s)), s)):
                self.close(liq, acct, s)
            self.cover_deficit(acct, liq)
            self.monitor.below.pop(liq.key, None)
            self.monitor.on_account(acct.risk())
            done.append(liq)
        return done

    def bankruptcy(self, acct: Acct, symbol: str) -> int:
        """The ledger's bankruptcy price of one position (cluster/rules/prices.py): a cross position's
        wallet counts the other cross positions at their unrealized PnL."""
        qty, cost = acct.positions[symbol]
        side = 1 if qty > 0 else -1
        if symbol in acct.isolated:
            wallet = acct.isolated[symbol] + cost
        else:
            cross = [s for s in acct.positions if s not in acct.isolated]
            wallet = acct.balance + sum(acct.positions[s][1] for s in cross)
            wallet += sum(self.value(acct, s) - acct.positions[s][1] for s in cross if s != symbol)
        price = bankruptcy_price(side=side, qty=abs(qty), cost=cost, wallet=wallet,
                                 mult=self.books[symbol].mult)
        if price is None:
            return 1 if side > 0 else 10**15
        return max(1, round_price(price, side))

    def close(self, liq: Liq, acct: Acct, symbol: str) -> None:
        """The `full` policy: the whole position walked into the book at once, limited at its
        bankruptcy price; the rest to the backstop accounts, then the fund unless that takes it
        below its floor, then ADL (the engine's rule, nodes/liquidator/engine.py's backstop
        phase)."""
        book = self.books[symbol]
        qty = acct.positions[symbol][0]
        side = -1 if qty > 0 else 1  # the closing side
        bp = self.bankruptcy(acct, symbol)
        self.reduce(liq, acct, symbol, abs(qty), bp)
        left = abs(acct.positions.get(symbol, [0, 0])[0])
        if left:
            self.backstop_takers(liq, acct, symbol, left, bp)
            left = abs(acct.positions.get(symbol, [0, 0])[0])
        if not left:
            return
        loss = max(0, (bp - book.mark()) * -side) * left * book.mult
        if self.fund_equity() - loss >= self.floor:
            self.takeover(liq, acct, symbol, left, bp)
        else:
            self.adl(liq, acct, symbol, left, bp)

    def reduce(self, liq: Liq, acct: Acct, symbol: str, lots: int, limit: int
               ) -> tuple[int, int, int]:
        """A reduce-only IOC of `lots` limited at `limit` against the residual book, settled as
        the ledger settles fills (forced fee to the fund); its impact is attributed to `liq`.
        (lots filled, notional, forced fee)."""
        book = self.books[symbol]
        side = -1 if acct.positions[symbol][0] > 0 else 1
        fills, move = book.walk(side, lots, limit)
        filled = notional = fees = 0
        for price, take in fills:
            self.settle(acct, symbol, side * take, price)
            self.settle(self.market, symbol, -side * take, price)
            value = take * price * book.mult
            fees += self.forced_fee(acct, symbol, value)
            filled += take
            notional += value
        liq.book_notional += notional
        liq.fee += fees
        liq.qty[symbol] = liq.qty.get(symbol, 0) - side * filled
        if move:
            self.inflict(liq, symbol, move)
            book.keep_permanent(side, move, self.params.permanent_ppm)
        return filled, notional, fees

    def transfer(self, src: Acct, dst: Acct, symbol: str, lots: int, price: int) -> None:
        """`lots` of src's position move to dst at `price`, like a trade without fees."""
        side = -1 if src.positions[symbol][0] > 0 else 1  # src closes
        self.settle(src, symbol, side * lots, price)
        self.settle(dst, symbol, -side * lots, price)

    def takeover(self, liq: Liq, acct: Acct, symbol: str, lots: int, price: int) -> None:
        side = -1 if acct.positions[symbol][0] > 0 else 1
        self.transfer(acct, self.insurance, symbol, lots, price)
        liq.insurance_qty += lots
        liq.qty[symbol] = liq.qty.get(symbol, 0) - side * lots

    def adl(self, liq: Liq, acct: Acct, symbol: str, lots: int, price: int
            ) -> list[tuple[str, int, int]]:
        """Profitable opposite positions closed against the bankrupt one at `price`, in the ADL
        queue's order (cluster/rules/adl.py), as the ledger's ADL step does. Records the volume,
        the profit closed out below the mark (haircut) and what the fund could not have taken
        (shortfall): the overshoot is haircut beyond shortfall."""
        book = self.books[symbol]
        qty = acct.positions[symbol][0]
        side = -1 if qty > 0 else 1
        mark = book.mark()
        loss = max(0, (price - mark) * -side) * lots * book.mult
        self.adl_shortfall += max(0, loss - max(0, self.fund_equity() - self.floor))
        candidates = []
        for name, other in self.accounts.items():
            pos = other.positions.get(symbol)
            if name == acct.name or pos is None or (pos[0] > 0) == (qty > 0):
                continue
            margin = other.isolated[symbol] + self.value(other, symbol) \
                if symbol in other.isolated else self.equity(other)
            candidates.append((name, pos[0], pos[1], self.value(other, symbol), margin))
        takers, left = [], lots
        for name, score in adl.ranking(candidates):
            if score <= 0 or not left:
                break
            other = self.accounts[name]
            take = min(left, abs(other.positions[symbol][0]))
            self.transfer(acct, other, symbol, take, price)
            self.adl_haircut += max(0, (price - mark) * -side) * take * book.mult
            self.adl_volume += take * price * book.mult
            liq.adl_qty += take
            liq.qty[symbol] = liq.qty.get(symbol, 0) - side * take
            left -= take
            takers.append((name, take, price))
            if self.venue is None:
                self.monitor.on_account(other.risk())
        if left:  # nobody left to close against: the venue's liquidation ends "incomplete"
            self.unresolved.append({"liquidation": liq.id, "symbol": symbol, "qty": left})
        return takers

    def forced_fee(self, acct: Acct, symbol: str, notional: int) -> int:
        """The ledger's forced-execution fee: to the fund, never more than the margin balance."""
        rate = self.books[symbol].spec.forced_fee_ppm
        if not rate:
            return 0
        balance = (acct.isolated[symbol] + self.value(acct, symbol)) if symbol in acct.isolated \
            and symbol in acct.positions else self.equity(acct)
        fee = min(fee_due(notional, rate), max(0, balance))
        if fee:
            if symbol in acct.isolated and symbol in acct.positions:
                acct.isolated[symbol] -= fee
            else:
                acct.balance -= fee
            self.insurance.balance += fee
        return fee

    def inflict(self, liq: Liq, symbol: str, move: Fraction) -> None:
        """The equity this walk's mark move took from every other holder on the losing side
        (Cont-Schaanning's indirect contagion), from the running open-interest totals."""
        mult = self.books[symbol].mult
        longs, shorts = self.oi[symbol]
        own = self.accounts[liq.account].positions.get(symbol, [0, 0])[0]
        lots = longs - max(0, own) if move < 0 else shorts - max(0, -own)
        liq.inflicted += lots * abs(move) * mult
        self.walks.append((liq.id, symbol, move))

    def parent_of(self, liq: Liq) -> None:
        """The liquidation whose walk, in the round just before the threshold was found crossed,
        took the most equity from this account (at its positions now); ties to the earlier one.
        None when no walk happened then: the exogenous shock (or a bounce's end) did it."""
        acct = self.accounts[liq.account]
        _, _, only = liq.key.partition(":")
        held = {s: q for s, (q, _) in acct.positions.items()
                if (s == only if only else s not in acct.isolated)}
        weights: dict[int, Fraction] = {}
        for liq_id, s, move in self.recent:
            if s in held:
                weights[liq_id] = weights.get(liq_id, Fraction(0)) - held[s] * move * self.books[s].mult
        if weights:
            best_id = max(sorted(weights), key=lambda i: weights[i])
            if weights[best_id] > 0:
                liq.parent, liq.parent_weight = best_id, floor(weights[best_id])

    # ---------------------------------------------------------------- output

    def result(self, peak: dict[str, Fraction], rounds: int) -> dict:
        p = self.params
        # every liquidation that closed something (a `venue` one may stop early, "restored")
        closed = [liq for liq in self.liqs if liq.executed >= 0 and
                  (any(liq.qty.values()) or liq.status != "restored")]
        # liquidated notional at the snapshot's marks (book, takeover and ADL alike), so that
        # rounds and runs compare in the same units
        notional = {liq.id: sum(abs(q) * self.books[s].mark0 * self.books[s].mult
                                for s, q in liq.qty.items()) for liq in closed}
        first = min((liq.executed for liq in closed), default=-1)
        first_notional = sum(notional[liq.id] for liq in closed if liq.executed == first)
        total = sum(notional.values())
        by_round: dict[int, int] = {}
        children: dict[int, int] = {}
        executed_in = {liq.id: liq.executed for liq in closed}
        for liq in closed:
            by_round[liq.executed] = by_round.get(liq.executed, 0) + 1
        for liq in closed:
            if liq.parent in executed_in:
                r = executed_in[liq.parent]
                children[r] = children.get(r, 0) + 1
        branching = [{"round": r, "executed": n, "children": children.get(r, 0),
                      "ratio": dec(Fraction(children.get(r, 0), n))}
                     for r, n in sorted(by_round.items())]
        amplification = {}
        for s, b in self.books.items():
            exo = abs(self.exo_total[s])
            final = Fraction(b.mark0 - b.mark()) * (-1 if self.exo_total[s] > 0 else 1)
            amplification[s] = {
                "exogenous_bps": self.exo_bps[s], "exogenous_ticks": dec(exo),
                "peak_move_ticks": floor(peak[s]), "final_move_ticks": floor(final),  # whole ticks
                "amplification": dec(peak[s] / exo) if exo else None,
                "final_amplification": dec(final / exo) if exo else None}
        accounts = sorted({liq.account for liq in closed})
        contributions = sorted(
            ({"liquidation": liq.id, "account": liq.account, "inflicted": floor(liq.inflicted),
              "notional": notional[liq.id]} for liq in closed),
            key=lambda c: (-c["inflicted"], c["liquidation"]))
        per_account: dict[str, int] = {}
        for c in contributions:
            per_account[c["account"]] = per_account.get(c["account"], 0) + c["inflicted"]
        return {
            "params": msgspec.to_builtins(p),
            "summary": {
                "rounds": rounds, "liquidations": len(closed), "accounts_liquidated": len(accounts),
                "restored": sum(1 for liq in self.liqs if liq.status == "restored"),
                "cascade_notional": total, "first_round_notional": first_notional,
                "notional_amplification": dec(Fraction(total, first_notional))
                if first_notional else None,
                "amplification": amplification,
                "bad_debt": self.bad_debt, "insurance_fund_start": self.fund_start,
                "insurance_fund_end": self.insurance.balance,
                "insurance_fund_equity_end": self.fund_equity(),
                "fund_drawdown": self.fund_start - self.fund_min,
                "bad_debt_exceeds_fund": self.bad_debt > self.fund_start,
                "backstop_qty": sum(b["qty"] for b in self.backstop_takeovers),
                "backstop_notional": sum(b["qty"] * b["price"] * self.books[b["symbol"]].mult
                                         for b in self.backstop_takeovers),
                "adl_volume": self.adl_volume, "adl_haircut": self.adl_haircut,
                "adl_overshoot": max(0, self.adl_haircut - self.adl_shortfall),
                "unresolved": self.unresolved,
                "money": {"before": self.cash0, "after": self.cash()},
            },
            "branching": branching,
            # every takeover by a backstop account, in the order it happened (round by round)
            "backstop": self.backstop_takeovers,
            "liquidations": [{
                "id": liq.id, "key": liq.key, "status": liq.status, "round_triggered": liq.triggered,
                "round_executed": liq.executed, "parent": liq.parent,
                "parent_weight": liq.parent_weight, "qty": liq.qty,
                "book_notional": liq.book_notional, "backstop_qty": liq.backstop_qty,
                "insurance_qty": liq.insurance_qty,
                "adl_qty": liq.adl_qty, "bad_debt": liq.bad_debt, "forced_fee": liq.fee,
                "deficit_covered": liq.deficit_covered,
                "inflicted": floor(liq.inflicted)} for liq in self.liqs],
            "contributions": {"by_liquidation": contributions[:20], "by_account": dict(
                sorted(per_account.items(), key=lambda kv: (-kv[1], kv[0])))},
            "graph": {"nodes": [liq.id for liq in closed],
                      "edges": [[liq.parent, liq.id, liq.parent_weight]
                                for liq in closed if liq.parent]},
            "marks": [{"round": r["round"], **r["marks"]} for r in self.rounds],
        }


def floor(x: Fraction) -> int:
    return x.numerator // x.denominator


def dec(x: Fraction, places: int = 6) -> str:
    """A Fraction as a fixed decimal string, rounded half away from zero: exact and stable."""
    scaled = abs(x) * 10**places
    n = floor(scaled + Fraction(1, 2))
    sign = "-" if x < 0 and n else ""
    return f"{sign}{n // 10**places}.{n % 10**places:0{places}d}"


def simulate(snap: Snapshot, params: CascadeParams, stress: StressParams) -> dict:
    out = Cascade(snap, params, stress).run()
    out["snapshot_sha256"] = snapshot_digest(snap)
    return out


def snapshot_digest(snap: Snapshot) -> str:
    """sha256 of the snapshot's canonical JSON (sorted keys): the same state, the same digest."""
    canonical = json.dumps(msgspec.to_builtins(snap), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode(result: dict) -> bytes:
    """The result's canonical bytes: sorted keys, no spaces (byte-identical for the same run)."""
    return json.dumps(result, sort_keys=True, separators=(",", ":")).encode()


# ------------------------------------------------------------------ the oracle's toy market


def linear_band(*, accounts: int = 600, s_lots: int, d_lots: int, mark: int = 6_000_000,
                spacing: int = 1_000, levels: int | None = None, mult: int = 10,
                mmr_ppm: int = 100_000, fund: int = 0) -> Snapshot:
    """RISK-ANALYTICS 3.4's toy market in venue units: BTC at $60,000 in ticks of $0.01 (lots of
    0.001 BTC, atoms of $1e-6: 10 atoms per tick-lot); `accounts` longs of `s_lots` each whose
    liquidation prices (the venue's trigger) fall every `spacing` ticks ($10) below the mark; a
    bid book of `d_lots` per `spacing`. So g*lambda = s/d. With a 10 % maintenance rate the
    bankruptcy prices sit 10 % below, out of the band's way, as the closed form assumes."""
    tiers = [(0, PPM // mmr_ppm, mmr_ppm)]
    cap = 10**18
    ladder = build_ladder([(f, lev, m, None) for f, lev, m in tiers], cap)
    levels = levels or accounts * s_lots // max(1, d_lots) + accounts + 10
    sym = SymbolSnap(mult=mult, mark=mark, tiers=tiers, ladder_cap=cap,
                     bids=[(mark - spacing * (i + 1), d_lots) for i in range(levels)
                           if mark - spacing * (i + 1) > 0],
                     asks=[(mark + spacing * (i + 1), d_lots) for i in range(10)])
    accts = {}
    for k in range(1, accounts + 1):
        lp = mark - spacing * k
        value = s_lots * lp * mult
        # equity at lp equals its maintenance margin exactly: liquidated at lp and below
        balance = maintenance_margin(ladder, value) - value
        accts[f"acct{k:04d}"] = AccountSnap(balance=balance,
                                            positions={"BTC-PERP": (s_lots, s_lots * mark * mult)})
    total = accounts * s_lots
    accts["rest"] = AccountSnap(balance=total * mark * mult * 10,
                                positions={"BTC-PERP": (-total, -total * mark * mult)})
    return Snapshot(source="linear_band", symbols={"BTC-PERP": sym}, accounts=accts,
                    insurance_fund=fund)


# ------------------------------------------------------------------ sweeps and the R(p) map


class SweepParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    shock_symbol: str
    shocks_bps: list[int]  # signed, in the order to report
    regimes: list[str] = msgspec.field(default_factory=lambda: ["calm", "crisis"])
    latencies: list[int] = msgspec.field(default_factory=lambda: [0])
    depth_scales_ppm: list[int] = msgspec.field(default_factory=lambda: [PPM])
    recovery_ppm: int = 0
    permanent_ppm: int = PPM
    shock_rounds: int = 1
    max_rounds: int = 2_000
    a_max: str = "2"  # the amplification that defines the critical depth
    bisect_steps: int = 8
    close: Literal["full", "venue"] = "full"


def sweep(snap: Snapshot, sp: SweepParams, stress: StressParams) -> dict:
    """Shock x regime x latency x depth scale: the amplification curve, the critical shock (the
    smallest shock whose bad debt exceeds the fund) per curve, and the critical depth (the depth
    scale, by bisection, where the largest shock's amplification falls to `a_max`)."""
    if not sp.shocks_bps or not sp.regimes or not sp.latencies or not sp.depth_scales_ppm:
        raise CascadeError("bad_params", "a sweep needs at least one value on every axis")
    if len(sp.shocks_bps) * len(sp.regimes) * len(sp.latencies) * len(sp.depth_scales_ppm) > 2_000:
        raise CascadeError("bad_params", "more than 2000 runs in one sweep")
    a_max = Fraction(sp.a_max)
    runs, curves = [], []

    def one(shock: int, regime: str, latency: int, depth: int) -> dict:
        params = CascadeParams(shock_symbol=sp.shock_symbol, shock_bps=shock, regime=regime,
                               latency_rounds=latency, depth_scale_ppm=depth,
                               recovery_ppm=sp.recovery_ppm, permanent_ppm=sp.permanent_ppm,
                               shock_rounds=sp.shock_rounds, max_rounds=sp.max_rounds,
                               close=sp.close)
        return Cascade(snap, params, stress).run()["summary"]

    for regime in sp.regimes:
        for latency in sp.latencies:
            for depth in sp.depth_scales_ppm:
                points = []
                for shock in sp.shocks_bps:
                    s = one(shock, regime, latency, depth)
                    a = s["amplification"][sp.shock_symbol]
                    point = {"shock_bps": shock, "amplification": a["amplification"],
                             "final_amplification": a["final_amplification"],
                             "cascade_notional": s["cascade_notional"],
                             "accounts_liquidated": s["accounts_liquidated"],
                             "rounds": s["rounds"], "bad_debt": s["bad_debt"],
                             "fund_drawdown": s["fund_drawdown"], "adl_volume": s["adl_volume"],
                             "bad_debt_exceeds_fund": s["bad_debt_exceeds_fund"]}
                    points.append(point)
                    runs.append({"regime": regime, "latency_rounds": latency,
                                 "depth_scale_ppm": depth, **point})
                critical = min((abs(p["shock_bps"]) for p in points if p["bad_debt_exceeds_fund"]),
                               default=None)
                curves.append({"regime": regime, "latency_rounds": latency,
                               "depth_scale_ppm": depth, "points": points,
                               "critical_shock_bps": critical})
    # critical depth per (regime, latency) at the largest shock: bisection on the depth scale
    worst = max(sp.shocks_bps, key=abs)
    critical_depth = []
    for regime in sp.regimes:
        for latency in sp.latencies:
            def amp_at(depth: int) -> Fraction:
                a = one(worst, regime, latency, depth)["amplification"][sp.shock_symbol]
                return Fraction(a["amplification"]) if a["amplification"] else Fraction(0)
            entry = {"regime": regime, "latency_rounds": latency, "shock_bps": worst,
                     "a_max": sp.a_max, "depth_scale_ppm": None, "note": ""}
            # Halve the depth from 16x until the amplification exceeds a_max, then bisect. Not a
            # plain bisection over (0, 16x]: a book too thin to fill anything within the
            # bankruptcy prices sends everything to the fund and moves nothing (A falls again).
            hi = 16 * PPM
            if amp_at(hi) > a_max:
                entry["note"] = "above a_max even at 16x depth"
            else:
                lo = hi // 2
                while lo >= PPM // 1024 and amp_at(lo) <= a_max:
                    hi, lo = lo, lo // 2
                if lo < PPM // 1024:
                    entry["note"] = "at or below a_max down to 1/1024 of the depth"
                else:
                    for _ in range(sp.bisect_steps):  # amp_at(lo) > a_max >= amp_at(hi)
                        mid = (lo + hi) // 2
                        if amp_at(mid) > a_max:
                            lo = mid
                        else:
                            hi = mid
                    entry["depth_scale_ppm"] = hi
            critical_depth.append(entry)
    return {"params": msgspec.to_builtins(sp), "snapshot_sha256": snapshot_digest(snap),
            "curves": curves, "runs": runs, "critical_depth": critical_depth,
            "r_map": r_map(snap)}


def trigger_price(snap: Snapshot, specs: dict[str, SymbolSpec], acct: AccountSnap,
                  symbol: str) -> Fraction | None:
    """The mark of `symbol` (exact ticks) at which the venue's trigger (equity <= MM + forced fee)
    is reached for this account's position in it, the account's other cross positions held at
    the snapshot's marks; None when no positive price reaches it (or there is no position)."""
    from cluster.rules.prices import liquidation_price

    pos = acct.positions.get(symbol)
    if not pos or not pos[0]:
        return None
    qty, cost = pos
    if symbol in acct.isolated:
        wallet, other_mm, other_upnl = acct.isolated[symbol] + cost, 0, 0
    else:
        others = [(s, p) for s, p in acct.positions.items()
                  if s != symbol and s not in acct.isolated and p[0]]
        wallet = acct.balance + sum(p[1] for s, p in acct.positions.items()
                                    if s not in acct.isolated)
        values = {s: p[0] * snap.symbols[s].mark * snap.symbols[s].mult for s, p in others}
        # what the trigger counts for the others: their MM and their forced fees
        other_mm = sum(trigger_margin(specs[s].tiers, v, specs[s].forced_fee_ppm)
                       for s, v in values.items())
        other_upnl = sum(values[s] - p[1] for s, p in others)
    spec = specs[symbol]
    lp, _ = liquidation_price(side=1 if qty > 0 else -1, qty=abs(qty), cost=cost, wallet=wallet,
                              tiers=spec.tiers, mult=snap.symbols[symbol].mult,
                              fee_ppm=spec.forced_fee_ppm, other_mm=other_mm,
                              other_upnl=other_upnl)
    return lp


def r_map(snap: Snapshot, bucket_bps: int = 10, buckets: int = 100) -> dict:
    """The cheap reproduction-number map, per symbol and price bucket (no simulation):
    R(p) = g(p) * lambda(p) = notional whose liquidation threshold lies in the bucket / book
    notional resting in the same bucket (the bucket width cancels). Downside buckets pair long
    thresholds with bids, upside ones short thresholds with asks. R >= 1: a cascade that reaches
    the bucket sustains itself there; an empty bucket with thresholds in it is "inf"."""
    specs = {s: spec_of(s, sym) for s, sym in snap.symbols.items()}
    out = {}
    for symbol, sym in sorted(snap.symbols.items()):
        liq = [0] * (2 * buckets)  # index: buckets-1 .. 0 below the mark, buckets .. above
        depth = [0] * (2 * buckets)

        def bucket(price: int) -> int | None:
            i = math.floor(Fraction((price - sym.mark) * BPS, sym.mark * bucket_bps)) + buckets
            return i if 0 <= i < 2 * buckets else None

        for price, qty in [*sym.bids, *sym.asks]:
            i = bucket(price)
            if i is not None:
                depth[i] += qty * price * sym.mult
        for acct in snap.accounts.values():
            pos = acct.positions.get(symbol)
            if not pos or not pos[0]:
                continue
            qty = pos[0]
            lp = trigger_price(snap, specs, acct, symbol)
            if lp is None:
                continue
            price = round_price(lp, 1 if qty > 0 else -1)
            i = bucket(price)
            if i is not None and (i < buckets) == (qty > 0):
                liq[i] += abs(qty) * price * sym.mult  # what is sold there, at that price
        rows = []
        for i in range(2 * buckets):
            if not liq[i] and not depth[i]:
                continue
            r = dec(Fraction(liq[i], depth[i])) if depth[i] else ("inf" if liq[i] else "0")
            rows.append({"from_bps": (i - buckets) * bucket_bps,
                         "to_bps": (i - buckets + 1) * bucket_bps,
                         "liquidation_notional": liq[i], "book_notional": depth[i], "R": r})
        out[symbol] = {"bucket_bps": bucket_bps, "rows": rows,
                       "self_sustaining": [r["from_bps"] for r in rows
                                           if r["liquidation_notional"] and
                                           (r["R"] == "inf" or Fraction(r["R"]) >= 1)]}
    return out
