"""The surveillance core: features in, a ranked review queue and alerts out. Pure (no clock, no IO).

    core = SurveillanceCore(symbols)
    core.handle(msg, now_ns)        # private engine batches, risk's notices, oracle and book data
    alerts = core.tick(now_ns)      # rank; the items that newly crossed the alert score
    core.queue                      # the latest ranking (accounts, crowded symbols, drift items)

Advisory only: the core returns ranked items and alerts, and a `suggest` naming the existing
admin command a person could apply. It has no output addressed to any node.
"""

from __future__ import annotations

import hashlib

import msgspec

from cluster.config import SymbolSpec
from cluster.core import HashedCore, TimedCore
from nodes.surveillance.crowding import Crowding
from nodes.surveillance.features import Features
from nodes.surveillance.ranking import ALERT_MILLI, DriftBank, explain, rank

# A feature family -> what a person might do about it with an existing command (never done here).
SUGGEST = {
    "otr_num_milli": "review order-to-trade ratio (RTS 9 cap); throttle via gateway rate limits",
    "otr_vol_milli": "review order-to-trade ratio by volume (RTS 9 cap)",
    "cxl_lt_1ms_ppm": "review fleeting orders; throttle via gateway rate limits",
    "cxl_lt_10ms_ppm": "review fleeting orders; throttle via gateway rate limits",
    "cxl_lt_100ms_ppm": "review fleeting orders",
    "burst_100ms": "review cancel bursts; throttle via gateway rate limits",
    "touch_1s": "possible quote stuffing; throttle via gateway rate limits",
    "spoof_milli": "possible spoofing (cancel after opposite fill); review orders",
    "layer_milli": "possible layering; review orders",
    "levels": "possible layering; review orders",
    "depth_share_ppm": "concentration in a thin book; review position limits",
    "lev_changes": "review leverage changes",
    "lev_jump_milli": "leverage jump; review before the next large order",
    "lev_then_order": "leverage raised before a large order",
    "sweep_lots": "a large aggressive order; review for momentum ignition (a trade back)",
    "ignition_ppm": "possible momentum ignition; review trades",
    "liq_cluster": "liquidation prices crowd one bucket; review with perpx cascade",
    "liq_cohort_lots": "positions opened together crowd one liquidation price; review with perpx "
                       "cascade",
}


class SurveillanceCore(HashedCore, TimedCore):
    def __init__(self, symbols: dict[str, SymbolSpec]) -> None:
        self.features = Features(symbols)
        self.drift = DriftBank()
        self.crowding = Crowding()
        self.crowded: set[str] = set()  # symbols whose crowding item is raised
        self.drifting: set[str] = set()  # features whose drift item is raised
        self.queue: list[dict] = []
        self.alerted: dict[tuple[str, str], int] = {}  # key -> score when last alerted
        self.alerts = 0

    def handle(self, msg, now_ns: int) -> None:
        self.features.handle(msg, now_ns)

    def tick(self, now_ns: int) -> list[dict]:
        """Rank the window's population; return the alerts this tick raised: a key whose top
        contributor's z is above ALERT_MILLI (first time, or its score doubled since its last
        alert), a feature's drift or a symbol's crowding as it starts (the item stays in the
        queue while it lasts)."""
        values = self.features.values(now_ns)
        items = rank(values)
        drift = self.drift.feed(values)
        crowded = []
        for symbol in sorted(self.features.specs):
            item = self.crowding.feed(symbol, self.features.market_sample(symbol))
            if item is not None:
                crowded.append(item)
        self.queue = items + crowded + drift
        alerts = []
        for item in items:
            key = (item["account"], item["symbol"])
            last = self.alerted.get(key, 0)
            top_z = item["reasons"][0][2] if item["reasons"] else 0
            if top_z <= ALERT_MILLI or (last and item["score"] < 2 * last):
                continue
            self.alerted[key] = item["score"]
            counters = self.features.keys.get(key)
            top = item["reasons"][0][0] if item["reasons"] else ""
            alerts.append({**item, "ts_ns": now_ns,
                           "event_ns": counters.last_ns if counters else now_ns,
                           "suggest": SUGGEST.get(top, "")})
        for item in drift:
            if item["feature"] not in self.drifting:  # raised once while the drift lasts
                alerts.append({**item, "ts_ns": now_ns, "event_ns": now_ns, "suggest": ""})
        self.drifting = {item["feature"] for item in drift}
        for item in crowded:
            if item["symbol"] not in self.crowded:  # raised once until it clears
                alerts.append({**item, "ts_ns": now_ns, "event_ns": now_ns, "suggest":
                               "crowded positioning: review the IM buffer; perpx cascade"})
        self.crowded = {item["symbol"] for item in crowded}
        self.alerts += len(alerts)
        return alerts

    def explain(self, account: str, now_ns: int) -> list[dict]:
        return explain(self.features.values(now_ns), account)

    def state_hash(self) -> str:
        """The features' state (session totals and peaks of every key): replicas fed the same
        stream agree on it."""
        state = sorted((k, c.session, c.session_peaks) for k, c in self.features.keys.items())
        return hashlib.sha256(msgspec.msgpack.encode(state)).hexdigest()[:16]
