"""Valuation and margin: positions at mark, equity (cross, isolated, whole account), initial and
maintenance margin (the ladder, or the stress grid for a `portfolio` account), what the cross
wallet has available, and the liquidation and bankruptcy prices of a position."""

from __future__ import annotations

from cluster.rules import stress as sg
from cluster.rules import margin as rules
from cluster.rules.ladder import maintenance_margin
from cluster.rules.margin import trigger_margin
from cluster.rules.prices import bankruptcy_price, liquidation_price, round_price
from nodes.risk.accounts import AccountState, Position


class Margin:
    """What an account is worth and what it must hold (reads the state, changes nothing)."""

    def _price(self, symbol: str) -> int:
        return self.marks.get(symbol) or self.last.get(symbol, 0)

    def _leverage(self, acct: AccountState, symbol: str) -> int:
        return acct.leverage.get(symbol) or self.specs[symbol].default_leverage

    def _position_value(self, symbol: str, pos: Position) -> int:
        """Signed value at mark (at cost when no price is known yet)."""
        return rules.position_value(pos.qty, pos.cost, self._price(symbol),
                                    self.specs[symbol].atoms_per_tick_lot)

    def effective_leverage(self, acct: AccountState, symbol: str, notional: int) -> int:
        """The account's leverage setting, capped by the ladder tier the notional falls into."""
        return rules.effective_leverage(self._leverage(acct, symbol), self.specs[symbol].tiers,
                                        notional)

    def initial_margin(self, acct: AccountState, symbol: str, notional: int,
                       tier_notional: int | None = None) -> int:
        """IM on `notional`, leverage capped at the tier of `tier_notional`, times the buffer."""
        lev = self.effective_leverage(acct, symbol,
                                      notional if tier_notional is None else tier_notional)
        buffer = self.specs[symbol].im_buffer_ppm[self.regimes[symbol]]
        return rules.initial_margin(notional, lev, buffer)

    def cross_equity(self, acct: AccountState) -> int:
        return rules.cross_equity(acct.balance, (self._position_value(s, p)
                                                 for s, p in acct.positions.items() if not p.isolated))

    def isolated_equity(self, symbol: str, pos: Position) -> int:
        return rules.isolated_equity(pos.iso_cash, self._position_value(symbol, pos))

    def equity(self, acct: AccountState) -> int:
        return self.cross_equity(acct) + sum(self.isolated_equity(s, p)
                                             for s, p in acct.positions.items() if p.isolated)

    def position_margin(self, acct: AccountState, cross_only: bool = False) -> int:
        ladder = sum(self.initial_margin(acct, s, self._position_value(s, p))
                     for s, p in acct.positions.items() if not (cross_only and p.isolated))
        if acct.portfolio and acct.positions:
            return self.portfolio_margin(acct, ladder_im=ladder, explain=False).initial
        return ladder

    def maintenance_margin(self, acct: AccountState) -> int:
        ladder = sum(maintenance_margin(self.specs[s].tiers, self._position_value(s, p))
                     for s, p in acct.positions.items())
        if acct.portfolio and acct.positions:
            return self.portfolio_margin(acct, ladder_mm=ladder, explain=False).maintenance
        return ladder

    def portfolio_margin(self, acct: AccountState, ladder_mm: int | None = None,
                         ladder_im: int | None = None, explain: bool = True) -> sg.PortfolioMargin:
        """The account's requirements in the `portfolio` mode (cluster/rules/stress.py), its
        positions at risk's marks. Risk sees no book: no liquidity add-on here (the liquidator,
        which mirrors the books, adds it to the maintenance it triggers on)."""
        legs = []
        for s, p in sorted(acct.positions.items()):
            if p.qty:
                mult = self.specs[s].atoms_per_tick_lot
                mark = rules.mark_or_entry(self._price(s), p.qty, p.cost, mult)
                legs.append(sg.Leg(symbol=s, qty=p.qty, mark=mark, mult=mult))
        if ladder_mm is None:
            ladder_mm = sum(maintenance_margin(self.specs[s].tiers, self._position_value(s, p))
                            for s, p in acct.positions.items())
        if ladder_im is None:
            ladder_im = sum(self.initial_margin(acct, s, self._position_value(s, p))
                            for s, p in acct.positions.items())
        return sg.portfolio_margin(self.stress_params, legs, ladder_mm, ladder_im, explain)

    def portfolio_initial_after(self, acct: AccountState, symbol: str, change: int,
                                price: int = 0) -> int:
        """A portfolio account's initial requirement were its `symbol` position `change` lots
        larger (signed), at the marks (`price` where the symbol has none yet): the what-if of an
        order's fill at admission. `change` 0 gives the requirement now, by the same sums."""
        qty = {s: p.qty for s, p in acct.positions.items() if p.qty}
        qty[symbol] = qty.get(symbol, 0) + change
        legs, ladder_mm, ladder_im = [], 0, 0
        for s, q in sorted(qty.items()):
            if not q:
                continue
            spec = self.specs[s]
            mult = spec.atoms_per_tick_lot
            pos = acct.positions.get(s)
            mark = rules.mark_or_entry(self._price(s), pos.qty, pos.cost, mult) \
                if pos is not None and pos.qty else self._price(s) or max(1, price)
            value = q * mark * mult
            legs.append(sg.Leg(symbol=s, qty=q, mark=mark, mult=mult))
            ladder_mm += maintenance_margin(spec.tiers, value)
            ladder_im += self.initial_margin(acct, s, value)
        if not legs:
            return 0
        return sg.portfolio_margin(self.stress_params, legs, ladder_mm, ladder_im,
                                   explain=False).initial

    def available(self, acct: AccountState) -> int:
        """What the cross wallet can still commit: equity less cross IM and order reservations."""
        if not acct.positions:  # most order checks: nothing to value
            return acct.balance - acct.order_margin
        return self.cross_equity(acct) - self.position_margin(acct, cross_only=True) - acct.order_margin

    def _margin_balance(self, acct: AccountState, symbol: str) -> int:
        pos = acct.positions.get(symbol)
        if pos is not None and pos.isolated:
            return self.isolated_equity(symbol, pos)
        return self.cross_equity(acct)

    def _requirement_problem(self, acct: AccountState, symbol: str) -> dict | None:
        """Numbers of the first unmet requirement (cross available < 0, or isolated IM), or None."""
        available = self.available(acct)
        if available < 0:
            return {"required": -available, "available": 0}
        pos = acct.positions.get(symbol)
        if pos is not None and pos.isolated:
            equity = self.isolated_equity(symbol, pos)
            im = self.initial_margin(acct, symbol, self._position_value(symbol, pos))
            if equity < im:
                return {"required": im, "available": equity, "isolated": 1}
        return None

    def _portfolio_numbers(self, acct: AccountState) -> dict:
        """What decided a portfolio account's requirements, for explanations and views."""
        pm = self.portfolio_margin(acct)
        r = pm.stress
        numbers = {"initial_margin": pm.initial, "initial_source": pm.initial_source,
                   "maintenance_margin": pm.maintenance,
                   "maintenance_source": pm.maintenance_source,
                   "stress_requirement": r.requirement, "binding": r.binding,
                   "binding_regime": r.binding_regime, "params_version": r.version}
        for symbol, bps in sg.binding_move(r).items():
            numbers[f"worst_move_bps.{symbol}"] = bps
        return numbers

    def _prices_for(self, acct: AccountState, symbol: str, pos: Position) -> tuple[int, int]:
        """(liquidation, bankruptcy) price in ticks, rounded against the position; 0 = none."""
        spec = self.specs[symbol]
        side = 1 if pos.qty > 0 else -1
        if pos.isolated:
            wallet, other_mm, other_upnl = pos.iso_cash + pos.cost, 0, 0
        else:
            others = [(s, p) for s, p in acct.positions.items() if s != symbol and not p.isolated]
            wallet = acct.balance + sum(p.cost for p in acct.positions.values() if not p.isolated)
            # what the trigger counts for the others: their MM and their forced fees
            other_mm = sum(trigger_margin(self.specs[s].tiers, self._position_value(s, p),
                                          self.specs[s].forced_fee_ppm) for s, p in others)
            other_upnl = sum(self._position_value(s, p) - p.cost for s, p in others)
        lp, _ = liquidation_price(side=side, qty=abs(pos.qty), cost=pos.cost, wallet=wallet,
                                  tiers=spec.tiers, mult=spec.atoms_per_tick_lot,
                                  fee_ppm=spec.forced_fee_ppm, other_mm=other_mm,
                                  other_upnl=other_upnl)
        bp = bankruptcy_price(side=side, qty=abs(pos.qty), cost=pos.cost,
                              wallet=wallet + other_upnl, mult=spec.atoms_per_tick_lot)
        return (round_price(lp, side) if lp is not None else 0,
                round_price(bp, side) if bp is not None else 0)
