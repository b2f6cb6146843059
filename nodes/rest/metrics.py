"""Prometheus metrics of the cluster, on the facade's HTTP port at GET /metrics (prometheus-client's
text format). One scrape target for the whole venue:

- the facade's own: requests by route and status, latency histograms by route, sessions,
  WebSocket connections and events;
- the market, from the market data every client receives: mark / index / last price, oracle mode
  and healthy sources, oracle source status, volatility regime, funding rate, trades, book gaps;
- every node, from the supervisor's status file (rewritten every 250 ms from the nodes'
  heartbeats): up, restarts, heartbeat age, and each counter a node reports in its heartbeat
  (frames and messages in, rejects, errors, resends ...) as perpx_node_<name>_total{node};
- netsim: the link table the supervisor publishes (shaped links, latency model, loss, partitions).

Names follow Prometheus conventions: counters end in _total, durations are _seconds.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cluster.protocol import (
    FundingRate, IndexMark, NetsimTable, OracleMode, OracleSource, Regime, Trade,
)

STATUS_MAX_AGE_S = 5.0  # an older status file means no supervisor: nodes are reported down
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STAT_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class MarketGauges:
    """The latest market state per symbol, from market data (pure: fed messages)."""

    def __init__(self, tick_sizes: dict[str, object]) -> None:
        self.tick = tick_sizes
        self.marks: dict[str, IndexMark] = {}
        self.modes: dict[str, str] = {}
        self.mode_changes: dict[str, int] = {}
        self.regimes: dict[str, str] = {}
        self.sources: dict[tuple[str, str], str] = {}
        self.funding: dict[str, int] = {}  # rate e9
        self.trades: dict[str, int] = {}
        self.volume: dict[str, int] = {}  # lots
        self.netsim = None  # the supervisor's last NetsimTable

    def on_message(self, msg) -> None:
        kind = type(msg)
        if kind is Trade:
            self.trades[msg.symbol] = self.trades.get(msg.symbol, 0) + 1
            self.volume[msg.symbol] = self.volume.get(msg.symbol, 0) + msg.qty
        elif kind is IndexMark:
            self.marks[msg.symbol] = msg
            self.modes[msg.symbol] = msg.mode
        elif kind is OracleMode:
            self.modes[msg.symbol] = msg.mode
            self.mode_changes[msg.symbol] = self.mode_changes.get(msg.symbol, 0) + 1
        elif kind is Regime:
            self.regimes[msg.symbol] = msg.regime
        elif kind is OracleSource:
            self.sources[(msg.symbol, msg.venue)] = msg.status
        elif kind is FundingRate:
            self.funding[msg.symbol] = msg.rate_e9
        elif kind is NetsimTable:
            self.netsim = msg


class ClusterCollector:
    """Collects at scrape time from the facade, the market gauges and the supervisor's status."""

    def __init__(self, facade, market: MarketGauges, status_path: Path, books: dict) -> None:
        self.facade, self.market, self.status_path, self.books = facade, market, status_path, books

    def collect(self):
        yield from self._facade()
        yield from self._market()
        yield from self._nodes()
        yield from self._netsim()

    def _netsim(self):
        """The simulated network as the supervisor last published it (every node gets the table)."""
        table = self.market.netsim
        yield GaugeMetricFamily("perpx_netsim_table_version", "version of the netsim link table",
                                value=table.version if table else 0)
        shaped = GaugeMetricFamily("perpx_netsim_link_shaped", "1 for a shaped link, with its "
                                   "latency model and bandwidth", labels=["link", "latency", "bandwidth"])
        loss = GaugeMetricFamily("perpx_netsim_link_loss_ratio", "loss probability set on a link",
                                 labels=["link"])
        down = GaugeMetricFamily("perpx_netsim_link_down", "1 for a partitioned link", labels=["link"])
        for name, spec in sorted((table.links if table else {}).items()):
            latency = json.dumps(spec.get("latency") or {}, sort_keys=True)
            shaped.add_metric([name, latency, str(spec.get("bandwidth", ""))], 1.0)
            loss.add_metric([name], float(spec.get("loss", 0.0)))
            down.add_metric([name], 1.0 if spec.get("down") else 0.0)
        yield shaped
        yield loss
        yield down

    def _facade(self):
        requests = CounterMetricFamily("perpx_rest_requests", "REST requests answered, by route and "
                                       "HTTP status", labels=["route", "status"])
        for (route, status), n in sorted(self.facade.request_counts.items()):
            requests.add_metric([route, str(status)], n)
        yield requests
        yield GaugeMetricFamily("perpx_rest_sessions", "gateway sessions the facade holds (one per "
                                "API key)", value=len(self.facade.sessions))
        yield GaugeMetricFamily("perpx_ws_connections", "open WebSocket connections",
                                value=len(self.facade.streams.connections))
        yield CounterMetricFamily("perpx_ws_events", "WebSocket events sent",
                                  value=self.facade.streams.sent)
        orders = CounterMetricFamily("perpx_rest_orders", "orders sent to the venue through the facade",
                                     value=self.facade.stats["orders"])
        yield orders

    def _market(self):
        m = self.market
        price = {k: GaugeMetricFamily(f"perpx_{k}_price", f"the oracle's {k} price", labels=["symbol"])
                 for k in ("mark", "index", "last")}
        sources = GaugeMetricFamily("perpx_oracle_healthy_sources", "spot venues in the index",
                                    labels=["symbol"])
        age = GaugeMetricFamily("perpx_mark_age_seconds", "seconds since the last mark (a stale "
                                "mark is not acted on)", labels=["symbol"])
        now_ns = time.time_ns()
        for symbol, mark in sorted(m.marks.items()):
            tick = float(self.market.tick[symbol])
            price["mark"].add_metric([symbol], mark.mark * tick)
            price["index"].add_metric([symbol], mark.index * tick)
            price["last"].add_metric([symbol], mark.last * tick)
            sources.add_metric([symbol], mark.sources)
            age.add_metric([symbol], max(0.0, (now_ns - mark.ts_ns) / 1e9))
        yield from price.values()
        yield sources
        yield age
        mode = GaugeMetricFamily("perpx_oracle_mode", "1 for the oracle's current pricing mode",
                                 labels=["symbol", "mode"])
        for symbol, current in sorted(m.modes.items()):
            for name in ("normal", "carry", "book", "degraded"):
                mode.add_metric([symbol, name], 1.0 if current == name else 0.0)
        yield mode
        changes = CounterMetricFamily("perpx_oracle_mode_changes", "oracle mode switches seen",
                                      labels=["symbol"])
        for symbol, n in sorted(m.mode_changes.items()):
            changes.add_metric([symbol], n)
        yield changes
        regime = GaugeMetricFamily("perpx_regime", "1 for the symbol's current volatility regime",
                                   labels=["symbol", "regime"])
        for symbol, current in sorted(m.regimes.items()):
            for name in ("normal", "high_volatility", "degraded"):
                regime.add_metric([symbol, name], 1.0 if current == name else 0.0)
        yield regime
        source = GaugeMetricFamily("perpx_oracle_source_healthy", "1 when a spot venue is in the "
                                   "index (from its last status change)", labels=["symbol", "venue"])
        for (symbol, venue), status in sorted(m.sources.items()):
            source.add_metric([symbol, venue], 1.0 if status == "healthy" else 0.0)
        yield source
        funding = GaugeMetricFamily("perpx_funding_rate", "the last funding rate applied",
                                    labels=["symbol"])
        for symbol, rate in sorted(m.funding.items()):
            funding.add_metric([symbol], rate / 1e9)
        yield funding
        trades = CounterMetricFamily("perpx_trades", "trades published", labels=["symbol"])
        for symbol, n in sorted(m.trades.items()):
            trades.add_metric([symbol], n)
        yield trades
        gaps = CounterMetricFamily("perpx_book_gaps", "book deltas found missing by the facade's "
                                   "copy of the book (a lossy market-data link)", labels=["symbol"])
        for symbol, mirror in sorted(self.books.items()):
            gaps.add_metric([symbol], mirror.gaps)
        yield gaps

    def _nodes(self):
        up = GaugeMetricFamily("perpx_node_up", "1 when the node is running and heartbeating",
                               labels=["node"])
        restarts = CounterMetricFamily("perpx_node_restarts", "restarts by the supervisor in its "
                                       "window", labels=["node"])
        beat = GaugeMetricFamily("perpx_node_heartbeat_age_seconds", "since the node's last "
                                 "heartbeat", labels=["node"])
        stats: dict[str, CounterMetricFamily] = {}
        try:
            fresh = time.time() - self.status_path.stat().st_mtime < STATUS_MAX_AGE_S
            status = json.loads(self.status_path.read_text()) if fresh else {"nodes": {}}
        except (OSError, ValueError):
            status = {"nodes": {}}
        for name, node in sorted(status.get("nodes", {}).items()):
            up.add_metric([name], 1.0 if node.get("state") == "running" else 0.0)
            restarts.add_metric([name], node.get("restarts", 0))
            if node.get("heartbeat_age_ms") is not None:
                beat.add_metric([name], node["heartbeat_age_ms"] / 1000)
            for stat, value in sorted((node.get("stats") or {}).items()):
                if not (STAT_NAME.match(stat) and isinstance(value, (int, float))):
                    continue
                family = stats.get(stat)
                if family is None:
                    family = stats[stat] = CounterMetricFamily(
                        f"perpx_node_{stat.removesuffix('_total')}",
                        f"the node's '{stat}' heartbeat counter", labels=["node"])
                family.add_metric([name], value)
        yield up
        yield restarts
        yield beat
        yield from stats.values()


class Metrics:
    def __init__(self, facade, status_path: Path) -> None:
        self.registry = CollectorRegistry()
        self.market = MarketGauges({n: s.tick_size for n, s in facade.topo.symbols.items()})
        self.registry.register(ClusterCollector(facade, self.market, status_path, facade.books))
        self.latency = Histogram("perpx_rest_request_seconds", "REST request latency through the "
                                 "facade, by route", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
