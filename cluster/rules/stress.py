"""The portfolio stress grid (RISK-ANALYTICS.md section 1.6): cross margin as a correlated portfolio.

Exact integers throughout. Notionals N_s are signed money (atoms; long > 0), scan ranges R_s and
correlations in basis points (10_000 = 100 %). Per symbol the weighted sensitivity is the loss at a
full scan move, rounded against the account:

    WS_s = sign(N_s) * ceil(|N_s| * R_s / 10_000)

and per correlation regime m (the calm matrix blended toward J, rho = 1 everywhere, or toward I,
rho = 0 off the diagonal, by w bps, so every regime matrix is PSD when the calm one is):

    rho^m_st * 10^8 = rho_st * (10_000 - w) + target_st * w              (exact, scale 1e-8)
    Q_m = max(0, sum_s sum_t rho^m_st * 10^8 * WS_s * WS_t)               (scale 1e-8)
    K_m = ceil(sqrt(Q_m / 10^8)) = ceil(ceil_isqrt(Q_m) / 10^4)

K_m = sqrt(w' Sigma w) is itself a scenario: the largest loss over the ellipsoid of joint moves, at
x*_s = -R_s * (rho^m WS)_s / K_m bps. The requirement is the worst regime, floored by the largest
diversification credit the venue gives (c_max), plus a book-walk liquidity add-on per leg:

    requirement = max(max_m K_m, ceil((10_000 - c_max) * sum_s |WS_s| / 10_000)) + sum_s addon_s

Every number is explained: the binding term, each regime's K_m split per symbol (Euler allocation
WS_s * (rho^m WS)_s / (K_m * 10^8), apportioned so the parts sum to K_m exactly), the worst joint
move, and each leg's book walk.
"""

from __future__ import annotations

import tomllib
from fractions import Fraction
from math import isqrt
from pathlib import Path
from typing import Literal

import msgspec

from cluster.rules.units import ceil_div

BPS = 10_000
E8 = BPS * BPS
DEFAULT_PARAMS = Path(__file__).with_name("stress_params.toml")


class StressError(ValueError):
    """A parameter file or an input the grid cannot use; `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RegimeSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    toward: Literal["J", "I"]  # J: every correlation toward 1; I: toward 0
    weight_bps: int


class StressParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    version: str
    default_scan_bps: int
    grid_buckets: int = 4
    max_diversification_bps: int
    liquidity_allowance_bps: int = 0
    floor_at_ladder: bool = True
    # A portfolio account's initial requirement is its stress requirement x this (Deribit's
    # mm_factor 0.8: maintenance = 0.8 x initial, so initial = maintenance x 1.25)
    im_factor_bps: int = 12_500
    scan_bps: dict[str, int] = msgspec.field(default_factory=dict)
    correlation_bps: dict[str, int] = msgspec.field(default_factory=dict)  # "A/B" -> bps
    regimes: list[RegimeSpec] = msgspec.field(default_factory=list)

    def scan(self, symbol: str) -> int:
        return self.scan_bps.get(symbol, self.default_scan_bps)

    def rho(self, a: str, b: str) -> int:
        """Calm correlation in bps; the diagonal is 10_000, an unlisted pair 0."""
        if a == b:
            return BPS
        return self.correlation_bps.get(f"{a}/{b}", self.correlation_bps.get(f"{b}/{a}", 0))

    def regime(self, name: str) -> RegimeSpec:
        for regime in self.regimes:
            if regime.name == name:
                return regime
        raise StressError("unknown_regime", f"no regime {name!r}; known: "
                          f"{', '.join(r.name for r in self.regimes)}")

    def rho_e8(self, regime: RegimeSpec, a: str, b: str) -> int:
        """The regime's correlation of a and b in units of 1e-8 (exact: bps x bps)."""
        target = BPS if (regime.toward == "J" or a == b) else 0
        return self.rho(a, b) * (BPS - regime.weight_bps) + target * regime.weight_bps

    def beta_bps(self, regime: RegimeSpec, driver: str, symbol: str, move_bps: int) -> int:
        """The move of `symbol` (bps) that goes with `move_bps` of `driver` in this regime:
        beta = rho * R_symbol / R_driver, truncated toward zero (a shock is not rounded up)."""
        num = move_bps * self.rho_e8(regime, driver, symbol) * self.scan(symbol)
        den = E8 * self.scan(driver)
        q = abs(num) // den
        return q if num >= 0 else -q


def parse_params(data: dict) -> StressParams:
    try:
        params = msgspec.convert(data, StressParams)
    except msgspec.ValidationError as exc:
        raise StressError("bad_params", f"stress parameters: {exc}") from None
    check_params(params)
    return params


def load_params(path: str | Path | None = None) -> StressParams:
    path = Path(path) if path else DEFAULT_PARAMS
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StressError("bad_params", f"{path}: {exc}") from None
    return parse_params(data)


def check_params(params: StressParams) -> None:
    """Ranges, names, and an exact PSD check of the calm matrix (every regime is then PSD)."""
    if not 0 < params.default_scan_bps <= BPS:
        raise StressError("bad_params", f"default_scan_bps {params.default_scan_bps} not in (0, 10000]")
    for symbol, bps in params.scan_bps.items():
        if not 0 < bps <= BPS:
            raise StressError("bad_params", f"scan_bps[{symbol}] = {bps} not in (0, 10000]")
    if not 0 <= params.max_diversification_bps <= BPS:
        raise StressError("bad_params", "max_diversification_bps must be in [0, 10000]")
    if not 0 <= params.liquidity_allowance_bps <= BPS:
        raise StressError("bad_params", "liquidity_allowance_bps must be in [0, 10000]")
    if not BPS <= params.im_factor_bps <= 10 * BPS:
        raise StressError("bad_params", f"im_factor_bps {params.im_factor_bps} not in "
                          "[10000, 100000]: initial must not be below maintenance")
    if params.grid_buckets < 1:
        raise StressError("bad_params", "grid_buckets must be >= 1")
    if not params.regimes:
        raise StressError("bad_params", "at least one regime is needed")
    names = [r.name for r in params.regimes]
    if len(set(names)) != len(names):
        raise StressError("bad_params", f"regime names repeat: {names}")
    for regime in params.regimes:
        if not 0 <= regime.weight_bps <= BPS:
            raise StressError("bad_params", f"regime {regime.name}: weight_bps not in [0, 10000]")
    symbols = set(params.scan_bps)
    for pair, bps in params.correlation_bps.items():
        a, sep, b = pair.partition("/")
        if not sep or not a or not b or a == b:
            raise StressError("bad_params", f"correlation key {pair!r} is not 'A/B'")
        if f"{b}/{a}" in params.correlation_bps:
            raise StressError("bad_params", f"correlation {pair!r} given twice (both orders)")
        if not -BPS <= bps <= BPS:
            raise StressError("bad_params", f"correlation {pair} = {bps} not in [-10000, 10000]")
        symbols.update((a, b))
    order = sorted(symbols)
    if not is_psd([[params.rho(a, b) for b in order] for a in order]):
        raise StressError("not_psd", "the calm correlation matrix is not positive semi-definite "
                          f"over {order}: some portfolio would have a negative variance")


def is_psd(matrix: list[list[int]]) -> bool:
    """Exact positive semi-definiteness of a symmetric integer matrix (LDL' over Fractions)."""
    a = [[Fraction(v) for v in row] for row in matrix]
    n = len(a)
    for k in range(n):
        pivot = a[k][k]
        if pivot < 0:
            return False
        if pivot == 0:
            if any(a[i][k] != 0 for i in range(k + 1, n)):
                return False
            continue
        for i in range(k + 1, n):
            factor = a[i][k] / pivot
            for j in range(k + 1, n):
                a[i][j] -= factor * a[k][j]
    return True


def ceil_isqrt(n: int) -> int:
    root = isqrt(n)
    return root if root * root == n else root + 1


def weighted_sensitivity(notional: int, scan_bps: int) -> int:
    """Loss at a full scan move, signed like the position, rounded up in size."""
    size = ceil_div(abs(notional) * scan_bps, BPS)
    return size if notional >= 0 else -size


def apportion(total: int, weights: list[Fraction]) -> list[int]:
    """Integers proportional to `weights` (which sum to `total` up to rounding) that sum to
    `total` exactly: floors, then the leftover units to the largest remainders, ties by order."""
    floors = [w.numerator // w.denominator for w in weights]
    left = total - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-(weights[i] - floors[i]), i))
    step = 1 if left >= 0 else -1
    if step < 0:
        order.reverse()
    for i in range(abs(left)):
        floors[order[i % len(order)]] += step
    return floors


# ------------------------------------------------------------------ inputs and results


class Leg(msgspec.Struct, frozen=True, kw_only=True):
    """One position: signed lots at a mark (ticks); notional = qty * mark * mult atoms. `bids` /
    `asks` (price ticks, lots, best first) are the book it would close into, when known."""

    symbol: str
    qty: int
    mark: int
    mult: int = 1
    bids: list[tuple[int, int]] | None = None
    asks: list[tuple[int, int]] | None = None

    @property
    def notional(self) -> int:
        return self.qty * self.mark * self.mult


class RegimeResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    q_e8: int
    loss: int  # K_m
    worst_move_bps: dict[str, int]  # x*, rounded to the nearest bps
    contribution: dict[str, int]  # sums to `loss` exactly


class LiquidityAddon(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: int
    slippage: int  # the book walk's cost against the mark, atoms
    unfilled_qty: int  # lots the book could not take (charged at the scan move or the last level)
    allowance: int
    addon: int


class StressResult(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    notional: dict[str, int]
    weighted_sensitivity: dict[str, int]
    regimes: list[RegimeResult]
    binding_regime: str
    worst_regime_loss: int
    diversification_floor: int
    binding: str  # the regime's name, or "floor" when the diversification floor decides
    liquidity: list[LiquidityAddon]
    requirement: int
    grid: dict[str, list[tuple[int, int, int]]]  # symbol -> (k, move bps, leg PnL) per grid point


def regime_result(params: StressParams, regime: RegimeSpec, ws: dict[str, int],
                  explain: bool = True) -> RegimeResult:
    symbols = sorted(ws)
    rws = {s: sum(params.rho_e8(regime, s, t) * ws[t] for t in symbols) for s in symbols}
    q = max(0, sum(ws[s] * rws[s] for s in symbols))
    loss = -(-ceil_isqrt(q) // BPS)
    if not explain:  # the number only (a margin check): no move, no split
        return RegimeResult(name=regime.name, q_e8=q, loss=loss, worst_move_bps={},
                            contribution={})
    if loss == 0:
        return RegimeResult(name=regime.name, q_e8=q, loss=0,
                            worst_move_bps={s: 0 for s in symbols},
                            contribution={s: 0 for s in symbols})
    # x*_s in bps = -R_s * (rho WS)_s / K, with rho in 1e-8: exact, then to the nearest bps
    moves = {s: round(Fraction(-params.scan(s) * rws[s], E8 * loss)) for s in symbols}
    parts = apportion(loss, [Fraction(ws[s] * rws[s], E8 * loss) for s in symbols])
    return RegimeResult(name=regime.name, q_e8=q, loss=loss, worst_move_bps=moves,
                        contribution=dict(zip(symbols, parts)))


def liquidity_addon(leg: Leg, scan_bps: int, allowance_bps: int) -> LiquidityAddon:
    """Walk the closing side of the book for |qty|: the slippage against the mark, less the free
    allowance. What the book cannot take is charged at the farther of the last level and a full
    scan move (a book too thin to close into is the liquidity risk itself)."""
    levels = (leg.bids if leg.qty > 0 else leg.asks) or []
    closing = -1 if leg.qty > 0 else 1  # a long closes by selling into the bids
    need = abs(leg.qty)
    slippage = 0
    last = leg.mark
    for price, qty in levels:
        if need == 0:
            break
        take = min(need, qty)
        # only what is worse than the mark costs: a bid above the mark (a book not yet
        # re-quoted after a move) is no slippage, not a charge as if it were below
        slippage += take * max(0, closing * (price - leg.mark)) * leg.mult
        need -= take
        last = price
    if need:
        per_lot = max(closing * (last - leg.mark), ceil_div(leg.mark * scan_bps, BPS))
        slippage += need * per_lot * leg.mult
    allowance = abs(leg.notional) * allowance_bps // BPS  # a credit: rounds down
    return LiquidityAddon(symbol=leg.symbol, qty=leg.qty, slippage=slippage, unfilled_qty=need,
                          allowance=allowance, addon=max(0, slippage - allowance))


def grid_rows(params: StressParams, symbol: str, notional: int) -> list[tuple[int, int, int]]:
    """The SPAN-style rows of one leg alone: (k, move bps, PnL) for k = -b..+b; a loss rounds
    up in size (against the account), a gain down."""
    b = params.grid_buckets
    rows = []
    for k in range(-b, b + 1):
        move = Fraction(k * params.scan(symbol), b)
        pnl = Fraction(notional) * move / BPS
        rows.append((k, round(move), pnl.numerator // pnl.denominator))  # floor: loss up
    return rows


def stress(params: StressParams, legs: list[Leg], explain: bool = True) -> StressResult:
    """The stress requirement of a set of positions (one cross account), with its explanation
    (`explain` False: the same numbers, without the worst moves, splits and grid rows, which
    cost most of the time; for margin checks on every order)."""
    notional: dict[str, int] = {}
    for leg in legs:
        if leg.mark <= 0 or leg.mult <= 0:
            raise StressError("no_mark", f"{leg.symbol}: need a positive mark and multiplier")
        notional[leg.symbol] = notional.get(leg.symbol, 0) + leg.notional
    ws = {s: weighted_sensitivity(n, params.scan(s)) for s, n in sorted(notional.items())}
    regimes = [regime_result(params, r, ws, explain) for r in params.regimes]
    worst = max(regimes, key=lambda r: r.loss)  # first of the worst, in file order
    floor = ceil_div((BPS - params.max_diversification_bps) * sum(abs(v) for v in ws.values()), BPS)
    liquidity = [liquidity_addon(leg, params.scan(leg.symbol), params.liquidity_allowance_bps)
                 for leg in sorted(legs, key=lambda g: g.symbol)
                 if leg.qty and (leg.bids is not None or leg.asks is not None)]
    base = max(worst.loss, floor)
    return StressResult(
        version=params.version, notional=notional, weighted_sensitivity=ws, regimes=regimes,
        binding_regime=worst.name, worst_regime_loss=worst.loss, diversification_floor=floor,
        binding=worst.name if worst.loss >= floor else "floor", liquidity=liquidity,
        requirement=base + sum(a.addon for a in liquidity),
        grid={s: grid_rows(params, s, n) for s, n in sorted(notional.items())} if explain else {})


def portfolio_requirement(params: StressParams, ladder_mm: int, stress_requirement: int
                          ) -> tuple[int, str]:
    """Maintenance of an account in the `portfolio` margin mode: the stress requirement when it
    is higher than the summed ladder. The ladder stays a floor unless the parameter file says
    `floor_at_ladder = false` (then a well-hedged book may ask less than its legs' ladders)."""
    if stress_requirement > ladder_mm or not params.floor_at_ladder:
        return stress_requirement, "stress"
    return ladder_mm, "ladder"


def portfolio_initial(params: StressParams, ladder_im: int, stress_requirement: int
                      ) -> tuple[int, str]:
    """Initial requirement of an account in the `portfolio` margin mode: the stress requirement
    x im_factor_bps (rounded up), when it is higher than the summed per-symbol IM (leverage and
    IM buffer as for a cross account); the same floor rule as `portfolio_requirement`, so that
    initial >= maintenance whichever side binds."""
    stress_im = ceil_div(stress_requirement * params.im_factor_bps, BPS)
    if stress_im > ladder_im or not params.floor_at_ladder:
        return stress_im, "stress"
    return ladder_im, "ladder"


class PortfolioMargin(msgspec.Struct, frozen=True, kw_only=True):
    """Both requirements of a portfolio account and what decided them."""

    maintenance: int
    maintenance_source: str  # "stress" | "ladder"
    initial: int
    initial_source: str
    stress: StressResult


def portfolio_margin(params: StressParams, legs: list[Leg], ladder_mm: int, ladder_im: int,
                     explain: bool = True) -> PortfolioMargin:
    """The one definition risk (initial and maintenance) and the liquidator (maintenance, with
    the book it sees on each leg for the liquidity add-on) both apply to a portfolio account."""
    result = stress(params, legs, explain)
    mm, mm_source = portfolio_requirement(params, ladder_mm, result.requirement)
    im, im_source = portfolio_initial(params, ladder_im, result.requirement)
    return PortfolioMargin(maintenance=mm, maintenance_source=mm_source, initial=im,
                           initial_source=im_source, stress=result)


def binding_move(result: StressResult) -> dict[str, int]:
    """The worst joint move (bps per symbol) of the regime that binds."""
    for regime in result.regimes:
        if regime.name == result.binding_regime:
            return dict(regime.worst_move_bps)
    return {}
