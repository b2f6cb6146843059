"""What the risk core says: refusals and acknowledgements to the gateway, and the explanation
record (to the audit journal) that goes with every decision. Explanations are core effects."""

from __future__ import annotations

from cluster.audit import Explanation
from cluster.protocol import Ack, Error, OrderRejected, Reply, Report


class Replies:
    """Answers and explanations, appended to the effects list `out`."""

    def _explain(self, out: list, now_ns: int, rule: str, subject: str, decision: str,
                 numbers: dict) -> None:
        out.append(("audit", Explanation(ts_ns=now_ns, node="risk", rule=rule, subject=subject,
                                         decision=decision, numbers=numbers)))

    def _reject(self, out: list, ref: int, account: str, symbol: str, reason: str, detail: dict,
                now_ns: int, coid: str = "") -> None:
        out.append(("gateway", Report(ref=ref, account=account, event=OrderRejected(
            seq=0, ref=ref, order_id=0, account=account, symbol=symbol, reason=reason,
            detail=detail, client_order_id=coid))))
        self._explain(out, now_ns, f"risk.{reason}", account, "reject", {"symbol": symbol, **detail})

    def _refuse(self, out: list, ref: int, account: str, reason: str, detail: dict,
                now_ns: int) -> None:
        """A refused setting or transfer: an Error with the numbers, and an explanation."""
        out.append(("gateway", Reply(ref=ref, body=Error(reason=reason, detail=detail))))
        self._explain(out, now_ns, f"risk.{reason}", account, "reject", detail)

    def _ack(self, out: list, ref: int, account: str, action: str, detail: dict, now_ns: int) -> None:
        out.append(("gateway", Reply(ref=ref, body=Ack(action=action, detail=detail))))
        self._explain(out, now_ns, f"risk.{action}", account, "applied", detail)
        out.append(("liquidator", self.account_risk(account)))
