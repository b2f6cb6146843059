"""Prometheus metrics of the cluster, on the facade's HTTP port at GET /metrics (prometheus-client's
text format). One scrape target for the whole venue:

- the facade's own: requests by route and status, latency histograms by route, sessions,
  WebSocket connections and events;
- the market, from the market data every client receives: mark / index / last price, oracle mode
  and healthy sources, oracle source status, volatility regime, funding rate, trades, book gaps;
- every node, from the supervisor's status file (rewritten every 250 ms from the nodes'
  heartbeats): up, restarts, heartbeat age, and each counter a node reports in its heartbeat
  (frames and messages in, rejects, errors, resends ...) as perpx_node_<name>_total{node};
- from the nodes' labelled stats (cluster/stats.py): rejects by reason and throttles by rule (the
  gateway, its own refusals and those relayed from risk), the gateway's latency by request type
  (admission to the first answer), liquidation steps by kind (the liquidator), the insurance fund
  and funding settlements, payments and amounts (risk), and each node's drained-batch sizes (the
  frames waiting on a socket when it woke: its inbox backlog, up to the 512 of a full drain);
- the failover epoch and role of each node, when its status carries them (#19: risk and matching
  with a standby), else epoch 0; a standby's lag in inputs and seconds;
- netsim: the link table the supervisor publishes (shaped links, latency model, loss, partitions).

Names follow Prometheus conventions: counters end in _total, durations are _seconds.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from cluster.protocol import (
    FundingRate, IndexMark, NetsimTable, OracleMode, OracleSource, Regime, Trade,
)
from cluster.stats import INF, LATENCY_BOUNDS_US, split
from cluster.transport import BATCH_KEYS

STATUS_MAX_AGE_S = 5.0  # an older status file means no supervisor: nodes are reported down
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STAT_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# labelled counters of the nodes' stats: family -> (metric name, label, help)
LABELLED = {
    "rejects": ("perpx_rejects", "reason", "requests refused, by reason (the gateway's own "
                "refusals and those it relays from risk and matching)"),
    "throttles": ("perpx_throttles", "rule", "requests refused by a rate limit, by the rule "
                  "(bucket) that refused them; 'banned' and logon pacing by their reason"),
    "liquidation_steps": ("perpx_liquidation_steps", "kind", "liquidation steps carried out "
                          "(the liquidator's 'done' records), by kind"),
    "liquidations": ("perpx_liquidations", "outcome", "liquidations 'started', and ended by "
                     "outcome (closed, restored, incomplete)"),
    "link_messages_in": ("perpx_link_messages_in", "link", "messages a node applied from each "
                         "sequenced link (duplicates and refused epochs not counted)"),
    "link_messages_out": ("perpx_link_messages_out", "link", "messages a node sent on each "
                          "sequenced link (resends not counted)"),
}
# histograms of the nodes' stats: family -> (metric name, label or "", scale to the unit,
# bucket bounds (every series shows them all), help)
HISTOGRAMS = {
    "request_latency_us": ("perpx_gateway_request_seconds", "type", 1e-6, LATENCY_BOUNDS_US,
                           "the gateway's latency from admitting a request to its first "
                           "answer, by type"),
    "batch_frames": ("perpx_node_batch_frames", "", 1,
                     tuple(int(k.rsplit("|", 1)[1]) for k in BATCH_KEYS),
                     "frames drained per wake of a node's socket: what was waiting (the "
                     "backlog), up to a full drain of 512"),
}
# plain stats exported under their own names below, not as perpx_node_<stat>_total (#19's
# epoch and role_primary are perpx_node_epoch and perpx_node_role; its lags are gauges)
SPECIAL_STATS = frozenset({"insurance_fund_atoms", "funding_settlements", "funding_payments",
                           "funding_paid_atoms", "funding_received_atoms", "epoch",
                           "role_primary", "standby_lag_inputs", "standby_lag_ms"})


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
        self.atom = float(facade.topo.atom)

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
                                "API key and client address)", value=len(self.facade.sessions))
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
        serving = GaugeMetricFamily("perpx_node_serving", "1 for the instance that serves: a "
                                    "standby pair's primary, or a node without a standby",
                                    labels=["node"])
        restarts = CounterMetricFamily("perpx_node_restarts", "restarts by the supervisor in its "
                                       "window", labels=["node"])
        beat = GaugeMetricFamily("perpx_node_heartbeat_age_seconds", "since the node's last "
                                 "heartbeat", labels=["node"])
        epoch = GaugeMetricFamily("perpx_node_epoch", "the node's failover epoch (0: the node "
                                  "reports none)", labels=["node"])
        role = GaugeMetricFamily("perpx_node_role", "1 for the node's failover role (primary, "
                                 "standby, down) when it runs with a standby",
                                 labels=["node", "role"])
        lag_inputs = GaugeMetricFamily("perpx_node_standby_lag_inputs", "inputs a standby has "
                                       "not applied yet", labels=["node"])
        lag_seconds = GaugeMetricFamily("perpx_node_standby_lag_seconds", "age of the oldest "
                                        "input a standby has not applied", labels=["node"])
        stats: dict[str, CounterMetricFamily] = {}
        labelled = {family: CounterMetricFamily(metric, doc, labels=["node", label])
                    for family, (metric, label, doc) in LABELLED.items()}  # (even with no sample)
        histograms: dict[str, dict[tuple, dict[str, int]]] = {}  # family -> labels -> key -> n
        special: dict[str, dict[str, int]] = {}  # stat -> node -> value
        try:
            fresh = time.time() - self.status_path.stat().st_mtime < STATUS_MAX_AGE_S
            status = json.loads(self.status_path.read_text()) if fresh else {"nodes": {}}
        except (OSError, ValueError):
            status = {"nodes": {}}
        for name, node in sorted(status.get("nodes", {}).items()):
            up.add_metric([name], 1.0 if node.get("state") == "running" else 0.0)
            # the instance whose figures are the venue's: a pair's primary, or a lone node (a
            # dashboard keeps a standby's copy of the fund out with `and on(node) ... == 1`)
            serving.add_metric([name], 1.0 if node.get("state") == "running" and node.get(
                "role", "primary") == "primary" else 0.0)
            restarts.add_metric([name], node.get("restarts", 0))
            if node.get("heartbeat_age_ms") is not None:
                beat.add_metric([name], node["heartbeat_age_ms"] / 1000)
            node_stats = node.get("stats") or {}
            found_epoch = node.get("epoch", node_stats.get("epoch", 0))
            epoch.add_metric([name], found_epoch if isinstance(found_epoch, (int, float)) else 0)
            if isinstance(node.get("role"), str):
                role.add_metric([name, node["role"]], 1.0)
                if node["role"] == "primary":  # (the primary measures its standby's lag)
                    lag_inputs.add_metric([name], node_stats.get("standby_lag_inputs", 0))
                    lag_seconds.add_metric([name], node_stats.get("standby_lag_ms", 0) / 1000)
            for stat, value in sorted(node_stats.items()):
                if not isinstance(value, (int, float)):
                    continue
                parts = split(stat)
                if parts is not None:
                    self._labelled(name, parts, value, labelled, histograms)
                    continue
                if stat in SPECIAL_STATS:
                    special.setdefault(stat, {})[name] = value
                    continue
                if not STAT_NAME.match(stat):
                    continue
                family = stats.get(stat)
                if family is None:
                    family = stats[stat] = CounterMetricFamily(
                        f"perpx_node_{stat.removesuffix('_total')}",
                        f"the node's '{stat}' heartbeat counter", labels=["node"])
                family.add_metric([name], value)
        yield up
        yield serving
        yield restarts
        yield beat
        yield epoch
        yield role
        yield lag_inputs
        yield lag_seconds
        yield from stats.values()
        yield from labelled.values()
        yield from self._histograms(histograms, status)
        yield from self._money(special)

    @staticmethod
    def _labelled(node: str, parts, value, labelled: dict, histograms: dict) -> None:
        family, labels = parts
        if family in LABELLED and len(labels) == 1:
            labelled[family].add_metric([node, labels[0]], value)
        elif family in HISTOGRAMS and len(labels) == (2 if HISTOGRAMS[family][1] else 1):
            histograms.setdefault(family, {}).setdefault((node, *labels[:-1]), {})[labels[-1]] = value
        elif family.endswith("_sum") and family[:-4] in HISTOGRAMS:
            histograms.setdefault(family, {})[(node, *labels)] = value

    def _histograms(self, histograms: dict, status: dict):
        nodes = status.get("nodes", {})
        for family, (metric, label, scale, known, doc) in HISTOGRAMS.items():
            out = HistogramMetricFamily(metric, doc, labels=["node", label] if label else ["node"])
            sums = histograms.get(family + "_sum", {})
            for labels, counts in sorted(histograms.get(family, {}).items()):
                bounds = sorted(set(known) | {int(b) for b in counts if b.isdigit()})
                buckets, total = [], 0
                for bound in bounds:
                    total += counts.get(str(bound), 0)
                    buckets.append((f"{bound * scale:g}", total))
                buckets.append(("+Inf", total + counts.get(INF, 0)))
                if family == "batch_frames":  # its sum is the node's frames_in
                    value = (nodes.get(labels[0], {}).get("stats") or {}).get("frames_in", 0)
                else:
                    value = sums.get(labels, 0)
                out.add_metric(list(labels), buckets, value * scale)
            yield out

    def _money(self, special: dict):
        """Risk's insurance fund and funding settlements, in the collateral's units."""
        fund = GaugeMetricFamily("perpx_insurance_fund", "the insurance fund's cash (collateral)",
                                 labels=["node"])
        for node, atoms in sorted(special.get("insurance_fund_atoms", {}).items()):
            fund.add_metric([node], atoms * self.atom)
        yield fund
        for stat, metric, doc, scale in (
                ("funding_settlements", "perpx_funding_settlements", "funding times settled "
                 "(one per symbol and funding time)", 1),
                ("funding_payments", "perpx_funding_payments", "funding payments made or "
                 "received by accounts", 1),
                ("funding_paid_atoms", "perpx_funding_paid", "funding paid by accounts "
                 "(collateral)", self.atom),
                ("funding_received_atoms", "perpx_funding_received", "funding received by "
                 "accounts (collateral; the rounding remainder goes to the insurance fund)",
                 self.atom)):
            family = CounterMetricFamily(metric, doc, labels=["node"])
            for node, value in sorted(special.get(stat, {}).items()):
                family.add_metric([node], value * scale)
            yield family


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
