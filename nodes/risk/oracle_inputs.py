"""The oracle's inputs and the node's timer: marks (which re-price the orders they touch),
volatility regimes (the IM buffer), funding settlement, and the clock tick (funding clock, mark
ages)."""

from __future__ import annotations

from fractions import Fraction

from cluster.protocol import FundingEntry, FundingRate, Notice, Regime
from cluster.rules.funding import funding_payment
from nodes.risk.state import E9


class OracleInputs:
    """IndexMark, Regime, FundingRate and ClockTick applied to the state."""

    def _tick(self, now_ns: int, out: list) -> None:
        """The node's timer (a journaled input): the funding clock starts at the first tick, and
        a mark that stopped coming turns its symbol reduce-only even when no order asks."""
        self.funding_clock.begin({name: spec.funding_interval_s * E9
                                  for name, spec in self.specs.items()}, now_ns)
        self.mark_ages.check(self.specs, now_ns, out)

    def _set_mark(self, symbol: str, mark: int, now_ns: int, out: list) -> None:
        before = self.marks.get(symbol, 0)
        self.marks[symbol] = mark
        if mark != before and symbol in self._by_worst:
            self._mark_moved(symbol, before, mark, now_ns, out)

    def _regime(self, msg: Regime, now_ns: int, out: list) -> None:
        spec = self.specs.get(msg.symbol)
        before = self.regimes.get(msg.symbol)
        if spec is None or before == msg.regime:
            return
        self.regimes[msg.symbol] = msg.regime
        numbers = {
            "from_ppm": spec.im_buffer_ppm[before], "to_ppm": spec.im_buffer_ppm[msg.regime],
            "from_regime": before, "regime": msg.regime, "realized_vol_ppm": msg.realized_vol_ppm,
            "threshold_ppm": msg.threshold_ppm, "window_s": msg.window_s}
        self._explain(out, now_ns, "risk.im_buffer", msg.symbol, "im_buffer_changed", numbers)
        out.append(("gateway", Notice(rule="risk.im_buffer", subject=msg.symbol,
                                      decision="im_buffer_changed", numbers=numbers, ts_ns=now_ns)))
        for acct in self.accounts.values():
            self._reprice(acct, msg.symbol)
        self._explain_portfolio_shift(msg.symbol, before, now_ns, out)

    def _explain_portfolio_shift(self, symbol: str, before: str, now_ns: int, out: list) -> None:
        """A regime shift moves a portfolio account's initial requirement only where the summed
        ladder IM (which carries the IM buffer) binds it, not where the stress grid does: each
        account whose requirement did change gets one record, old -> new, with the stress
        grid's binding correlation regime and its worst joint move."""
        after = self.regimes[symbol]
        for name, acct in self.accounts.items():
            pos = acct.positions.get(symbol)
            if not acct.portfolio or pos is None or not pos.qty:
                continue
            new = self._portfolio_numbers(acct)
            self.regimes[symbol] = before
            old = self.portfolio_margin(acct, explain=False)
            self.regimes[symbol] = after
            if old.initial == new["initial_margin"]:
                continue
            self._explain(out, now_ns, "risk.portfolio_requirement", name, "requirement_changed", {
                "symbol": symbol, "from_regime": before, "regime": after,
                "from_initial_margin": old.initial, "from_initial_source": old.initial_source,
                **new})

    def _funding(self, msg: FundingRate, now_ns: int, out: list) -> None:
        """Settle funding for every open position of the symbol at the given mark."""
        spec = self.specs.get(msg.symbol)
        if spec is None or msg.mark <= 0 or not self.funding_clock.admit(
                msg, spec.funding_interval_s * E9, now_ns, out):
            return
        self._set_mark(msg.symbol, msg.mark, now_ns, out)
        net = paid = 0
        payers = receivers = 0
        for acct in self.accounts.values():
            pos = acct.positions.get(msg.symbol)
            if pos is None or not pos.qty:
                continue
            notional = abs(pos.qty) * msg.mark * spec.atoms_per_tick_lot
            side = 1 if pos.qty > 0 else -1
            payment = funding_payment(notional, Fraction(msg.rate_e9, E9), side)
            if pos.isolated:
                pos.iso_cash += payment
            else:
                acct.balance += payment
            pos.funding -= payment
            net += payment
            payers += payment < 0
            paid -= min(payment, 0)
            receivers += payment > 0
            acct.funding_history.appendleft(FundingEntry(
                ts_ns=msg.ts_ns or now_ns, symbol=msg.symbol, rate_e9=msg.rate_e9, qty=pos.qty,
                mark=msg.mark, payment=payment))
            out.append(("liquidator", self.account_risk(acct.name)))
        self.insurance_fund -= net  # payers rounded up, receivers down: the remainder is >= 0
        self._explain(out, now_ns, "risk.funding", msg.symbol, "funding_settled", {
            "rate_e9": msg.rate_e9, "mark": msg.mark, "payers": payers, "receivers": receivers,
            "paid": paid, "received": paid + net, "remainder_to_insurance": -net,
            "funding_ts_ns": msg.funding_ts_ns})
