"""Topology and venue configuration: one TOML file describes nodes, endpoints, symbols and accounts.

Endpoints may contain `{run}`, replaced by the absolute run directory, so the default file runs on
one host over ipc, and the same format with tcp host addresses runs nodes on several hosts.
"""

from __future__ import annotations

import os
import random
import re
import socket
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from cluster.journal import parse_policy
from cluster.rules.ladder import LadderError, Tier, build_ladder
from cluster.rules.units import PPM as PPM_INT, UnitError, parse_decimal, rate_to_ppm, to_units

DEFAULT_CONFIG = Path(__file__).with_name("topology.toml")
E9 = Decimal("0.000000001")
NODE_NAMES = ("feeds", "oracle", "matching", "risk", "liquidator", "gateway")
# Nodes started only when the topology has a section for them (after the required ones).
# The event-sourced cores: their inputs are journaled, their links sequenced (cluster/runner.py).
JOURNALED_NODES = ("risk", "matching")
# Nodes a topology may leave out; the supervisor starts the ones it names, after the others.
OPTIONAL_NODES = ("surveillance", "rest")


def node_names(topo) -> tuple[str, ...]:
    """The nodes a topology runs: every required one, then the optional ones it names."""
    return NODE_NAMES + tuple(n for n in OPTIONAL_NODES if n in topo.nodes)


class ConfigError(ValueError):
    pass


class Conf(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ClusterConf(Conf, kw_only=True):
    name: str = "perpx"
    run_dir: str = "var"
    collateral: str = "USDC"
    atom: str = "0.000001"
    seed: int = 1


class SupervisorConf(Conf, kw_only=True):
    control: str
    netsim: str = ""  # PUB: the simulated network's table, to every node
    admin: str = ""  # ROUTER: `perpx netsim ...` commands
    heartbeat_ms: int = 200
    heartbeat_timeout_ms: int = 1000
    # A node silent this long is hung: killed, then handled as a crash by its on_failure policy
    # (risk and matching come back from their journals). 0: only ever reported.
    hung_after_ms: int = 10000
    ready_timeout_ms: int = 15000
    # CurveZMQ on every internal link, clients checked against the run's keys (cluster/curve.py)
    curve: bool = True
    max_restarts: int = 3
    restart_window_s: int = 60


class Rule(Conf, frozen=True, kw_only=True):
    """`limit` tokens per `window_ms`, at most `burst` at once (0: the same as limit)."""

    limit: Annotated[int, msgspec.Meta(ge=0)]
    window_ms: Annotated[int, msgspec.Meta(ge=1)] = 1000
    burst: Annotated[int, msgspec.Meta(ge=0)] = 0

    @property
    def capacity(self) -> int:
        return self.burst or self.limit


class LimitsPolicy(Conf, frozen=True, kw_only=True):
    """The gateway's rate limits (nodes/gateway/limits.py), [nodes.gateway.rate_limits]."""

    enabled: bool = True
    key_weight: Rule = Rule(limit=1000, window_ms=1000, burst=2000)
    ip_weight: Rule = Rule(limit=3000, window_ms=1000, burst=6000)
    account_weight: Rule = Rule(limit=2000, window_ms=1000, burst=4000)
    account_orders: Rule = Rule(limit=300, window_ms=1000, burst=600)
    exit_floor: Rule = Rule(limit=20, window_ms=1000, burst=40)  # cancels and reduce-only
    ban_after: int = 100  # refusals within ban_window_ms that ban the key (or address)
    ban_window_ms: int = 60_000
    ban_ms: int = 30_000
    # Limits that tighten with the market: regime -> rule -> scale in ppm of the rule above
    # (0: nothing but exits at the floor). The most severe regime of any symbol is in force.
    scale: dict[Literal["high_volatility", "degraded"], dict[str, Annotated[int, msgspec.Meta(
        ge=0, le=1_000_000)]]] = msgspec.field(default_factory=lambda: {
            "high_volatility": {"account_orders": 500_000},
            "degraded": {"account_orders": 0}})


class NodeConf(Conf, kw_only=True):
    inbox: str = ""
    client: str = ""  # gateway: client ROUTER
    pub: str = ""  # market data / index publisher
    private: str = ""  # matching: the private engine feed (PUB), bound when surveillance runs
    # risk, matching: a hot standby (cluster/failover.py), a second process "<node>.b" with its own
    # endpoints; `repl` is each instance's replication socket. Over ipc they default to the
    # primary's paths with ".b" (and ".repl"); over tcp every one must be given.
    standby: bool = False
    repl: str = ""
    standby_inbox: str = ""
    standby_pub: str = ""
    standby_repl: str = ""
    standby_private: str = ""  # matching.b's private feed to surveillance
    on_failure: Literal["restart", "stop_all"] = "restart"
    # feeds
    venues: list[str] = msgspec.field(default_factory=list)
    interval_ms: int = 100
    # liquidator
    check_interval_ms: int = 250
    # risk
    max_open_orders: int = 200
    insurance_fund: str = "0"  # the fund's starting cash (counted as a deposit)
    # liquidator
    backstop_accounts: list[str] = msgspec.field(default_factory=list)
    insurance_floor: str = "0"  # below this, the fund takes nothing more: ADL instead
    chunk_position_share: str = "0.25"  # a reduction IOC closes at most this share of the position
    chunk_depth_share: str = "0.5"  # ... and of the visible depth within the bankruptcy price
    max_mark_age_ms: int = 3000  # never act on an older mark
    pause_when_degraded: bool = True
    # gateway: sessions, and logons that fail (each failure past the free ones doubles the wait
    # before the next attempt from that address; at max_logon_failures it is locked out)
    max_sessions_per_ip: int = 64
    max_sessions_per_key: int = 16
    free_logon_failures: int = 3
    logon_delay_ms: int = 1000
    max_logon_failures: int = 10
    logon_lockout_ms: int = 300_000
    rate_limits: LimitsPolicy = msgspec.field(default_factory=LimitsPolicy)
    recv_window_ms: int = 5000  # a signed request this far from the gateway's clock is refused
    # CurveZMQ on the client ROUTER too: every client brings the gateway's public key
    # (RUN/gateway.pub) and its traffic (logons, a key's secret made over the wire) is encrypted
    client_curve: bool = False
    # oracle
    weights: dict[str, int] = msgspec.field(default_factory=dict)  # venue -> weight (default 1)
    stale_after_ms: int = 2000
    outlier_band: str = "0.03"
    min_sources: int = 3
    max_carry_ms: int = 3000
    book_max_ms: int = 10000
    book_band: str = "0.02"
    recovery_ms: int = 2000
    # rest: the Binance-compatible facade (nodes/rest/)
    http: str = ""  # HOST:PORT it serves HTTP on
    quote_asset: str = "USDT"  # Binance's name for the collateral: BTC-PERP <-> BTCUSDT
    weight_per_minute: int = 2400  # request weight per client address per minute (429 past it)
    secrets: str = ""  # TOML file api_key = "secret"; empty: the run's key file (perpx keys)


class TierConf(Conf, kw_only=True):
    floor: str  # notional in collateral units where the tier starts (exclusive)
    max_leverage: int
    mmr: str  # maintenance margin rate, e.g. "0.004"
    maintenance_amount: str | None = None  # optional: checked against the derived amount


class SymbolConf(Conf, kw_only=True):
    tick_size: str
    lot_size: str
    min_qty: str
    max_qty: str
    max_notional: str
    price_band: str = "0.05"
    market_protection: str = "0.05"
    maker_fee: str = "0.0002"
    taker_fee: str = "0.0005"
    forced_fee: str = "0.002"
    default_leverage: int = 20
    max_leverage: int = 100
    ladder: list[TierConf] = msgspec.field(default_factory=list)
    ladder_cap: str = "0"
    initial_price: str = "0"
    volatility: str = "0.0005"  # feeds: per-step relative standard deviation
    funding_interval_s: int = 28_800
    funding_cap: str = "0.0075"
    interest_rate: str = "0.0001"  # per funding interval
    im_buffer_high_volatility: str = "1.5"  # initial margin multiplier in that regime
    im_buffer_degraded: str = "2"
    impact_margin: str = "200"  # impact notional = impact_margin x max_leverage (funding premium)
    vol_window_s: int = 300
    vol_threshold: str = "0.05"  # realized vol over the window above which IM is buffered


class AccountConf(Conf, kw_only=True):
    name: str
    api_key: str
    deposit: str = "0"
    scopes: list[Literal["trade", "read", "transfer", "admin"]] = msgspec.field(default_factory=lambda: ["trade"])


class JournalConf(Conf, kw_only=True):
    """`[journal]`: how risk and matching journal their inputs (cluster/runner.py)."""

    enabled: bool = True
    fsync: str = "every_batch"  # every_batch | interval_ms:N | off (cluster/journal.py)
    snapshot_every: int = 200_000  # inputs between snapshots ...
    snapshot_interval_s: int = 60  # ... or seconds, whichever comes first (with new inputs)
    segment_mb: int = 64
    keep_snapshots: int = 2


class FailoverConf(Conf, kw_only=True):
    """`[failover]`: how a core's standby decides that its primary is gone (cluster/failover.py)."""

    beat_ms: Annotated[int, msgspec.Meta(ge=10, le=10_000)] = 100  # primary -> standby
    promote_after_ms: Annotated[int, msgspec.Meta(ge=50, le=600_000)] = 600  # no beat this long
    witness: str = "gateway"  # the client-facing node that must have lost the primary too
    witness_silence_ms: Annotated[int, msgspec.Meta(ge=10, le=600_000)] = 450
    # a standby this late with its acknowledgement: the primary asks the witness, then goes on alone
    ack_timeout_ms: Annotated[int, msgspec.Meta(ge=10, le=600_000)] = 500
    announce_ms: Annotated[int, msgspec.Meta(ge=50, le=60_000)] = 1000  # PrimaryIs, again


class TopologyConf(Conf, kw_only=True):
    cluster: ClusterConf = msgspec.field(default_factory=ClusterConf)
    supervisor: SupervisorConf
    nodes: dict[str, NodeConf]
    symbols: dict[str, SymbolConf]
    accounts: list[AccountConf] = msgspec.field(default_factory=list)
    journal: JournalConf = msgspec.field(default_factory=JournalConf)
    failover: FailoverConf = msgspec.field(default_factory=FailoverConf)


class SymbolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A symbol in integer units, as cores use it."""

    name: str
    tick_size: Decimal
    lot_size: Decimal
    atoms_per_tick_lot: int  # notional in atoms = price_ticks * qty_lots * atoms_per_tick_lot
    min_qty: int  # lots
    max_qty: int  # lots
    max_notional: int  # atoms
    band_ppm: int
    protection_ppm: int
    maker_fee_ppm: int
    taker_fee_ppm: int
    forced_fee_ppm: int
    default_leverage: int
    max_leverage: int
    tiers: tuple[Tier, ...]
    initial_price: int  # ticks
    volatility_ppm: int
    funding_interval_s: int
    funding_cap_e9: int
    interest_e9: int
    im_buffer_ppm: dict[str, int]  # regime -> initial margin multiplier (ppm)
    impact_notional: int  # atoms
    vol_window_s: int
    vol_threshold_ppm: int

    def public(self) -> dict[str, int | str]:
        return {
            "tick_size": str(self.tick_size), "lot_size": str(self.lot_size),
            "min_qty": self.min_qty, "max_qty": self.max_qty,
            "max_notional": self.max_notional, "maker_fee_ppm": self.maker_fee_ppm,
            "taker_fee_ppm": self.taker_fee_ppm,
        }


class Account(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    api_key: str
    deposit: int  # atoms
    scopes: tuple[str, ...] = ("trade",)


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    run_dir: str
    name: str
    seed: int
    collateral: str
    atom: Decimal
    supervisor: SupervisorConf
    nodes: dict[str, NodeConf]
    symbols: dict[str, SymbolSpec]
    accounts: dict[str, Account]
    journal: JournalConf = msgspec.field(default_factory=JournalConf)
    failover: FailoverConf = msgspec.field(default_factory=FailoverConf)

    def node(self, name: str) -> NodeConf:
        return self.nodes[name]

    def instances(self, name: str) -> tuple[str, ...]:
        """The processes of node `name`: itself, and "<name>.b" when it has a standby."""
        conf = self.nodes.get(name)
        return (name, f"{name}.b") if conf is not None and conf.standby else (name,)

    def instance_endpoints(self, instance: str) -> NodeConf:
        """An instance's own endpoints: the standby process binds its `standby_*` ones (and no
        private feed: surveillance hears the first instance)."""
        node, _, b = instance.partition(".")
        conf = self.nodes[node]
        if not b:
            return conf
        return msgspec.structs.replace(conf, inbox=conf.standby_inbox, pub=conf.standby_pub,
                                       repl=conf.standby_repl, private=conf.standby_private)

    @property
    def log_dir(self) -> str:
        return os.path.join(self.run_dir, "log")

    @property
    def sock_dir(self) -> str:
        return os.path.join(self.run_dir, "run")

    def atoms(self, text: str, what: str) -> int:
        return to_units(text, self.atom, what, "amount_not_whole_atoms")


def _ladder(name: str, conf: SymbolConf, atom: Decimal) -> tuple[Tier, ...]:
    def atoms(text: str, what: str) -> int:
        return to_units(text, atom, f"{name}.{what}", "amount_not_whole_atoms")

    rows = [(atoms(t.floor, "ladder.floor"), t.max_leverage, rate_to_ppm(t.mmr, f"{name}.ladder.mmr"),
             atoms(t.maintenance_amount, "ladder.maintenance_amount")
             if t.maintenance_amount is not None else None) for t in conf.ladder]
    try:
        return build_ladder(rows, atoms(conf.ladder_cap, "ladder_cap"))
    except LadderError as exc:
        raise ConfigError(f"{name}: ladder: {exc}") from None


def _symbol_spec(name: str, conf: SymbolConf, atom: Decimal) -> SymbolSpec:
    tick = parse_decimal(conf.tick_size, f"{name}.tick_size")
    lot = parse_decimal(conf.lot_size, f"{name}.lot_size")
    if tick <= 0 or lot <= 0:
        raise ConfigError(f"{name}: tick_size and lot_size must be positive")
    per_tick_lot = tick * lot / atom
    if per_tick_lot != per_tick_lot.to_integral_value() or per_tick_lot < 1:
        raise ConfigError(
            f"{name}: tick_size x lot_size ({tick * lot}) must be a whole number of atoms ({atom})"
        )
    if not 1 <= conf.default_leverage <= conf.max_leverage:
        raise ConfigError(f"{name}: need 1 <= default_leverage <= max_leverage")
    spec = SymbolSpec(
        name=name,
        tick_size=tick,
        lot_size=lot,
        atoms_per_tick_lot=int(per_tick_lot),
        min_qty=to_units(conf.min_qty, lot, f"{name}.min_qty", "qty_off_lot"),
        max_qty=to_units(conf.max_qty, lot, f"{name}.max_qty", "qty_off_lot"),
        max_notional=to_units(conf.max_notional, atom, f"{name}.max_notional", "amount_not_whole_atoms"),
        band_ppm=rate_to_ppm(conf.price_band, f"{name}.price_band"),
        protection_ppm=rate_to_ppm(conf.market_protection, f"{name}.market_protection"),
        maker_fee_ppm=rate_to_ppm(conf.maker_fee, f"{name}.maker_fee"),
        taker_fee_ppm=rate_to_ppm(conf.taker_fee, f"{name}.taker_fee"),
        forced_fee_ppm=rate_to_ppm(conf.forced_fee, f"{name}.forced_fee"),
        default_leverage=conf.default_leverage,
        max_leverage=conf.max_leverage,
        tiers=_ladder(name, conf, atom),
        initial_price=to_units(conf.initial_price, tick, f"{name}.initial_price", "price_off_tick"),
        volatility_ppm=rate_to_ppm(conf.volatility, f"{name}.volatility"),
        funding_interval_s=conf.funding_interval_s,
        funding_cap_e9=to_units(conf.funding_cap, E9, f"{name}.funding_cap", "rate_not_whole_e9"),
        interest_e9=to_units(conf.interest_rate, E9, f"{name}.interest_rate", "rate_not_whole_e9"),
        im_buffer_ppm={
            "normal": PPM_INT,
            "high_volatility": rate_to_ppm(conf.im_buffer_high_volatility,
                                           f"{name}.im_buffer_high_volatility"),
            "degraded": rate_to_ppm(conf.im_buffer_degraded, f"{name}.im_buffer_degraded"),
        },
        impact_notional=to_units(conf.impact_margin, atom, f"{name}.impact_margin",
                                 "amount_not_whole_atoms") * conf.max_leverage,
        vol_window_s=conf.vol_window_s,
        vol_threshold_ppm=rate_to_ppm(conf.vol_threshold, f"{name}.vol_threshold"),
    )
    if spec.funding_interval_s < 1 or min(spec.im_buffer_ppm.values()) < PPM_INT:
        raise ConfigError(f"{name}: need funding_interval_s >= 1 and IM buffers >= 1")
    if spec.max_leverage > spec.tiers[0].max_leverage:
        raise ConfigError(f"{name}: max_leverage above the ladder's first tier")
    if not 1 <= spec.min_qty <= spec.max_qty:
        raise ConfigError(f"{name}: need 1 lot <= min_qty <= max_qty")
    out_of_range = [key for key, ok in (
        ("price_band", spec.band_ppm > 0), ("market_protection", spec.protection_ppm > 0),
        ("max_notional", spec.max_notional > 0), ("initial_price", spec.initial_price > 0),
        ("funding_cap", spec.funding_cap_e9 >= 0), ("taker_fee", spec.taker_fee_ppm >= 0),
        ("forced_fee", spec.forced_fee_ppm >= 0), ("volatility", spec.volatility_ppm >= 0),
        ("vol_threshold", spec.vol_threshold_ppm > 0), ("vol_window_s", spec.vol_window_s >= 1),
    ) if not ok]
    if out_of_range:  # a negative band refuses every order; a negative cap inverts funding
        raise ConfigError(f"{name}: out of range: {', '.join(out_of_range)} (bands, protection, "
                          "notional, prices, windows positive; caps, fees, volatility not negative)")
    if spec.maker_fee_ppm + spec.taker_fee_ppm < 0:
        raise ConfigError(f"{name}: maker rebate larger than taker fee would drain the fee pool")
    for tier in spec.tiers:
        # Liquidation triggers at equity <= MM + forced fee. A position opened at a tier's maximum
        # leverage has equity ~ IM = notional / leverage: unless that is above MMR + forced fee,
        # the venue would accept a position that its liquidator takes at once (a 125x BTC long
        # with 0.4% + 0.5% was liquidated 0.6 s after opening, the mark above its entry).
        if tier.max_leverage * (tier.mmr_ppm + spec.forced_fee_ppm) >= PPM_INT:
            raise ConfigError(
                f"{name}: tier {tier.number} allows {tier.max_leverage}x, an initial margin of "
                f"{Decimal(1) / tier.max_leverage:.4%} of notional, which is not above its "
                f"maintenance rate {Decimal(tier.mmr_ppm) / PPM_INT:.2%} + the forced fee "
                f"{Decimal(spec.forced_fee_ppm) / PPM_INT:.2%}: a position opened at that leverage "
                "would be liquidated at once; lower max_leverage or forced_fee")
    return spec


def load(path: str | os.PathLike | None = None, run_dir: str | None = None) -> Topology:
    """Read and check a topology file; `run_dir` overrides the file's run directory."""
    path = Path(path or os.environ.get("PERPX_CONFIG") or DEFAULT_CONFIG).resolve()
    try:
        raw = tomllib.loads(path.read_text())
        conf = msgspec.convert(raw, TopologyConf)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    missing = [n for n in NODE_NAMES if n not in conf.nodes]
    if missing:
        raise ConfigError(f"{path}: nodes missing: {', '.join(missing)}")
    run = Path(run_dir or conf.cluster.run_dir)
    if not run.is_absolute():
        run = Path.cwd() / run
    run_s = str(run)
    try:
        atom = parse_decimal(conf.cluster.atom, "cluster.atom")
        symbols = {name: _symbol_spec(name, s, atom) for name, s in conf.symbols.items()}
        accounts = {
            a.name: Account(
                name=a.name, api_key=a.api_key, scopes=tuple(a.scopes),
                deposit=to_units(a.deposit, atom, f"{a.name}.deposit", "amount_not_whole_atoms"),
            )
            for a in conf.accounts
        }
    except UnitError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    problems = _out_of_range(conf)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    if len({a.api_key for a in accounts.values()}) != len(accounts):
        raise ConfigError(f"{path}: api keys must be unique")

    if any(n.standby for n in conf.nodes.values()) and conf.failover.witness not in conf.nodes:
        raise ConfigError(f"{path}: failover.witness = {conf.failover.witness!r} is not a node of "
                          "this topology (the client-facing node a standby asks before promoting)")
    gateway = conf.nodes.get("gateway")
    if gateway is not None and gateway.client_curve and not conf.supervisor.curve:
        raise ConfigError(f"{path}: nodes.gateway.client_curve = true needs supervisor.curve = "
                          "true (the gateway's CURVE key is the run's keyring's)")
    rest = conf.nodes.get("rest")
    if rest is not None and not (HTTP_ENDPOINT.match(rest.http)
                                 and 0 < int(rest.http.rsplit(":", 1)[1]) < 65536):
        raise ConfigError(f"{path}: nodes.rest.http = {rest.http!r} is not HOST:PORT (the facade's "
                          "HTTP endpoint, e.g. 127.0.0.1:7720)")
    if rest is not None and rest.weight_per_minute < 1:
        raise ConfigError(f"{path}: nodes.rest.weight_per_minute = {rest.weight_per_minute} (must be >= 1)")

    def expand(endpoint: str) -> str:
        return endpoint.replace("{run}", run_s)

    for where, endpoint in [(f"nodes.{name}.{key}", getattr(n, key)) for name, n in conf.nodes.items()
                            for key in ("inbox", "client", "pub", "private")] + [
            (f"supervisor.{key}", getattr(conf.supervisor, key))
            for key in ("control", "netsim", "admin")]:
        if endpoint and not ENDPOINT.match(endpoint):
            raise ConfigError(f"{path}: {where} = {endpoint!r} is not a ZeroMQ endpoint "
                              "(tcp://HOST:PORT or ipc://PATH)")

    nodes = {
        name: msgspec.structs.replace(
            n, inbox=expand(n.inbox), client=expand(n.client), pub=expand(n.pub),
            private=expand(n.private),
        )
        for name, n in conf.nodes.items()
    }
    for name, n in list(nodes.items()):
        if n.standby:
            nodes[name] = _standby_endpoints(path, name, n, expand)
    sup = msgspec.structs.replace(conf.supervisor, control=expand(conf.supervisor.control),
                                  netsim=expand(conf.supervisor.netsim),
                                  admin=expand(conf.supervisor.admin))
    _distinct_endpoints(path, nodes, sup)
    return Topology(
        path=str(path), run_dir=run_s, name=conf.cluster.name, seed=conf.cluster.seed,
        collateral=conf.cluster.collateral, atom=atom, supervisor=sup, nodes=nodes,
        symbols=symbols, accounts=accounts, journal=conf.journal, failover=conf.failover,
    )


# The lowest value of each integer setting of a node or of the supervisor. A setting is checked on every node that carries it (every node's table has the same keys), so a
# value nobody reads is still refused rather than kept as a trap for the day someone does.
INT_RANGES = (
    ("interval_ms", 1), ("check_interval_ms", 1), ("max_open_orders", 1), ("max_mark_age_ms", 1),
    ("stale_after_ms", 1), ("min_sources", 1), ("max_carry_ms", 0), ("book_max_ms", 0),
    ("recovery_ms", 0),
)
SUPERVISOR_RANGES = (
    ("heartbeat_ms", 1), ("ready_timeout_ms", 1), ("max_restarts", 0), ("restart_window_s", 1),
    ("hung_after_ms", 0),
)
# Decimal settings: (key, lowest, lowest allowed itself?, highest, highest allowed itself?)
DECIMAL_RANGES = (
    ("insurance_fund", 0, True, None, False), ("insurance_floor", 0, True, None, False),
    ("chunk_position_share", 0, False, 1, True), ("chunk_depth_share", 0, False, 1, True),
    ("outlier_band", 0, False, 1, False), ("book_band", 0, False, 1, False),
)


def _range_text(low, low_ok: bool, high, high_ok: bool) -> str:
    if high is None:
        return f">= {low}" if low_ok else f"> {low}"
    return f"{'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"


def _out_of_range(conf: TopologyConf) -> list[str]:
    """Every setting outside its range and every broken cross-field rule, each named by its path
    with the value and what is allowed (all of them, so one edit fixes a file)."""
    problems: list[str] = []

    def bad(where: str, value, allowed: str) -> None:
        problems.append(f"{where} = {value!r} is out of range (allowed: {allowed})")

    sup = conf.supervisor
    for key, low in SUPERVISOR_RANGES:
        if getattr(sup, key) < low:
            bad(f"supervisor.{key}", getattr(sup, key), f">= {low}")
    if sup.hung_after_ms and sup.hung_after_ms <= sup.heartbeat_timeout_ms:
        bad("supervisor.hung_after_ms", sup.hung_after_ms,
            f"0 (never) or > supervisor.heartbeat_timeout_ms = {sup.heartbeat_timeout_ms}")
    if sup.heartbeat_timeout_ms <= sup.heartbeat_ms:
        bad("supervisor.heartbeat_timeout_ms", sup.heartbeat_timeout_ms,
            f"> supervisor.heartbeat_ms = {sup.heartbeat_ms}")
    venues = conf.nodes["feeds"].venues
    if not venues or len(set(venues)) != len(venues) or not all(venues):
        bad("nodes.feeds.venues", venues, "at least one venue, names non-empty and distinct")
    names = [a.name for a in conf.accounts]
    for name, node in conf.nodes.items():
        for key, low in INT_RANGES:
            if getattr(node, key) < low:
                bad(f"nodes.{name}.{key}", getattr(node, key), f">= {low}")
        for key, low, low_ok, high, high_ok in DECIMAL_RANGES:
            text = getattr(node, key)
            try:
                value = parse_decimal(text, f"nodes.{name}.{key}")
            except UnitError:
                bad(f"nodes.{name}.{key}", text, "a decimal number " +
                    _range_text(low, low_ok, high, high_ok))
                continue
            if value < low or (value == low and not low_ok) or \
                    (high is not None and (value > high or (value == high and not high_ok))):
                bad(f"nodes.{name}.{key}", text, _range_text(low, low_ok, high, high_ok))
        for venue, weight in sorted(node.weights.items()):
            if venue not in venues:
                bad(f"nodes.{name}.weights.{venue}", weight,
                    f"weights only for the venues of nodes.feeds.venues {venues}")
            elif weight < 1:
                bad(f"nodes.{name}.weights.{venue}", weight, ">= 1")
        for backstop in node.backstop_accounts:
            if backstop not in names:
                bad(f"nodes.{name}.backstop_accounts", backstop, "names of [[accounts]]")
    journal = conf.journal
    try:
        parse_policy(journal.fsync)
    except ValueError as exc:
        bad("journal.fsync", journal.fsync, str(exc))
    for key in ("snapshot_every", "snapshot_interval_s", "segment_mb", "keep_snapshots"):
        if getattr(journal, key) < 1:
            bad(f"journal.{key}", getattr(journal, key), ">= 1")
    oracle = conf.nodes["oracle"]
    if venues and oracle.min_sources > len(venues):  # else the book shows no mark, ever
        bad("nodes.oracle.min_sources", oracle.min_sources,
            f"1..{len(venues)}, the number of nodes.feeds.venues")
    seen: dict[str, int] = {}
    for i, account in enumerate(conf.accounts):
        where = f"accounts[{i}]"
        if not account.name or account.name == "insurance":  # risk's own account for the fund
            bad(f"{where}.name", account.name, "a non-empty name other than 'insurance'")
        elif account.name in seen:  # a second table with the same name would silently win
            bad(f"{where}.name", account.name,
                f"a name no other account has (accounts[{seen[account.name]}] has it)")
        seen.setdefault(account.name, i)
        if not account.api_key:
            bad(f"{where}.api_key", account.api_key, "a non-empty key")
        try:
            negative = parse_decimal(account.deposit, f"{where}.deposit") < 0
        except UnitError:
            negative = False  # reported with the unit conversion, which names it
        if negative:
            bad(f"{where}.deposit", account.deposit, ">= 0")
    return problems


def _b_path(endpoint: str, suffix: str = "") -> str:
    """ipc://DIR/risk.inbox -> ipc://DIR/risk.b.inbox (suffix: ".repl" -> ipc://DIR/risk.b.repl)."""
    stem, dot, ext = endpoint.rpartition(".")
    if not dot or "/" in ext:
        stem, ext = endpoint, ""
    return f"{stem}.b{suffix or ('.' + ext if ext else '')}"


def _standby_endpoints(path: Path, name: str, n: NodeConf, expand) -> NodeConf:
    """A standby's endpoints: given, or (ipc) the primary's paths with ".b"."""
    if name not in JOURNALED_NODES:
        raise ConfigError(f"{path}: nodes.{name}.standby = true: only a journaled core "
                          f"({', '.join(JOURNALED_NODES)}) has a standby")
    given = {k: expand(getattr(n, k)) for k in ("repl", "standby_inbox", "standby_pub",
                                                "standby_repl")}
    if n.inbox.startswith("ipc://"):
        stem = n.inbox.rpartition(".")[0] if n.inbox.endswith(".inbox") else n.inbox
        given["repl"] = given["repl"] or f"{stem}.repl"
        given["standby_inbox"] = given["standby_inbox"] or _b_path(n.inbox)
        given["standby_repl"] = given["standby_repl"] or _b_path(given["repl"])
        if n.pub:
            given["standby_pub"] = given["standby_pub"] or _b_path(n.pub)
        if n.private:
            given["standby_private"] = expand(n.standby_private) or _b_path(n.private)
    if n.private and "standby_private" not in given:
        given["standby_private"] = expand(n.standby_private)
    missing = [k for k, v in given.items() if not v and (k != "standby_pub" or n.pub)]
    if missing:
        raise ConfigError(f"{path}: nodes.{name}.standby = true over tcp needs "
                          + ", ".join(f"nodes.{name}.{k}" for k in missing))
    for key, endpoint in given.items():
        if endpoint and not ENDPOINT.match(endpoint):
            raise ConfigError(f"{path}: nodes.{name}.{key} = {endpoint!r} is not a ZeroMQ endpoint")
    return msgspec.structs.replace(n, **given)


def _distinct_endpoints(path: Path, nodes: dict[str, NodeConf], sup: SupervisorConf) -> None:
    """Two sockets on one endpoint cannot work: the second bind fails, or (ipc) takes the path over
    silently and the first node's peers talk to the wrong node (risk's inbox on matching's path:
    every order ended outcome_unknown with its margin never released)."""
    places = [(f"nodes.{name}.{key}", getattr(n, key)) for name, n in nodes.items()
              for key in ("inbox", "client", "pub", "repl", "standby_inbox", "standby_pub",
                          "standby_repl", "standby_private")]
    places += [(f"supervisor.{key}", getattr(sup, key)) for key in ("control", "netsim", "admin")]
    taken: list[tuple[str, str]] = []
    for where, endpoint in places:
        if not endpoint:
            continue
        for other_where, other in taken:
            if _same_endpoint(endpoint, other):
                raise ConfigError(f"{path}: {where} = {endpoint!r} is already {other_where}'s "
                                  f"endpoint ({other!r}) (allowed: an endpoint no other socket uses)")
        taken.append((where, endpoint))


def _same_endpoint(a: str, b: str) -> bool:
    """One socket address: the same text, or tcp ports that meet (same host, or a wildcard)."""
    if a == b:
        return True
    if not (a.startswith("tcp://") and b.startswith("tcp://")):
        return False
    (host_a, _, port_a), (host_b, _, port_b) = a[6:].rpartition(":"), b[6:].rpartition(":")
    wildcard = {"*", "0.0.0.0", "[::]"}
    return port_a == port_b and (host_a == host_b or host_a in wildcard or host_b in wildcard)


ENDPOINT = re.compile(r"^(tcp://(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):\d{1,5}|ipc://\S+)$")
HTTP_ENDPOINT = re.compile(r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$")  # the REST facade's HOST:PORT


# Ports for a local tcp cluster (tests, benches) come from below the kernel's usual ephemeral range
# (32768+): a port that bind(0) hands out there can be taken, before the cluster binds it, by the
# source port of any outgoing connection (tests open many). Parallel pytest workers get disjoint
# slices of it.
LOCAL_PORTS = range(20_000, 32_000)


def free_tcp_ports(n: int) -> list[int]:
    """`n` loopback tcp ports free now, for write_tcp_topology."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    width = len(LOCAL_PORTS) // max(1, workers)
    mine = range(LOCAL_PORTS.start + index * width, LOCAL_PORTS.start + (index + 1) * width)
    rng = random.Random()
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", rng.choice(mine)))
            except OSError:  # in use (or just taken by this loop): another one
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_tcp_topology(base: Path | str, dest: Path, ports: list[int], run_dir: Path,
                       internal_ipc: bool = False,
                       node_settings: dict[str, dict] | None = None,
                       sections: dict[str, dict] | None = None) -> Path:
    """A copy of `base` with endpoints on loopback tcp at the given ports (tests, several hosts).

    With `internal_ipc`, links between nodes keep their ipc endpoints and only the gateway's client
    endpoints move to the given ports. `node_settings` ({node: {key: value}}) override settings,
    `sections` ({"journal": {...}}) top-level tables.
    """
    raw = tomllib.loads(Path(base).read_text())
    for name, settings in (node_settings or {}).items():
        raw["nodes"][name].update(settings)
    for name, settings in (sections or {}).items():
        raw.setdefault(name, {}).update(settings)
    ports = list(ports)
    raw["cluster"]["run_dir"] = str(run_dir)
    if not internal_ipc:
        for key in ("control", "netsim", "admin"):
            if raw["supervisor"].get(key):
                raw["supervisor"][key] = f"tcp://127.0.0.1:{ports.pop()}"
    for name, node in raw["nodes"].items():
        for key in ("inbox", "client", "pub", "private"):
            if node.get(key) and (not internal_ipc or (name == "gateway" and key != "inbox")):
                node[key] = f"tcp://127.0.0.1:{ports.pop()}"
        if node.get("standby") and not internal_ipc:
            for key in ("repl", "standby_inbox", "standby_pub", "standby_repl", "standby_private"):
                if (key != "standby_pub" or node.get("pub")) and \
                        (key != "standby_private" or node.get("private")):
                    node[key] = f"tcp://127.0.0.1:{ports.pop()}"
        if node.get("http"):  # the REST facade's HTTP port
            node["http"] = f"127.0.0.1:{ports.pop()}"
    dest.write_text(_dump_toml(raw))
    return dest


def _dump_toml(data: dict, prefix: str = "") -> str:
    """A small TOML writer for our own config shape (tables of scalars, lists, arrays of tables)."""

    def scalar(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines: list[str] = []
    tables: list[tuple[str, dict]] = []
    arrays: list[tuple[str, list]] = []
    for key, value in data.items():
        qkey = key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'
        if isinstance(value, dict):
            tables.append((qkey, value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            arrays.append((qkey, value))
        else:
            lines.append(f"{qkey} = {scalar(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, table in tables:
        name = f"{prefix}{key}"
        out += f"\n[{name}]\n" + _dump_toml(table, name + ".")
    for key, items in arrays:
        for item in items:
            out += f"\n[[{prefix}{key}]]\n" + _dump_toml(item, f"{prefix}{key}.")
    return out
