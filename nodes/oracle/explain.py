"""What the oracle journals of what it publishes: a change of pricing mode, of a source's status,
of a symbol's volatility regime (a repeated regime, `changed` false, is not news)."""

from __future__ import annotations

from cluster.audit import Explanation
from cluster.protocol import OracleMode, OracleSource, Regime


def explanation(msg) -> Explanation | None:
    t = type(msg)
    if t is OracleMode:
        return Explanation(
            ts_ns=msg.ts_ns, node="oracle", rule=f"oracle.{msg.reason}",
            subject=msg.symbol, decision=f"{msg.previous}->{msg.mode}", numbers=msg.numbers)
    if t is OracleSource:
        return Explanation(
            ts_ns=msg.ts_ns, node="oracle", rule=f"oracle.source_{msg.status}",
            subject=msg.symbol, decision=f"{msg.venue}: {msg.previous}->{msg.status}",
            numbers={"venue": msg.venue, "age_ms": msg.age_ms,
                     "deviation_ppm": msg.deviation_ppm})
    if t is Regime and msg.changed:
        return Explanation(
            ts_ns=msg.ts_ns, node="oracle", rule="oracle.regime", subject=msg.symbol,
            decision=msg.regime, numbers={"realized_vol_ppm": msg.realized_vol_ppm,
                                          "threshold_ppm": msg.threshold_ppm,
                                          "window_s": msg.window_s})
    return None
