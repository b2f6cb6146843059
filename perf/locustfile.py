"""locust users on the perpx client protocol (ZeroMQ, on gevent via zmq.green).

Every request is reported to locust with its real response time (send to answer). Only a failure
of the system fails it (no answer in time, a socket error, the venue's `internal_error`, a session
it lost, a message it could not read: SYSTEM_REASONS); the venue's own refusal of a request is a
rule working, reported as a success under the name `refused: <reason>`, so refusals are counted by
reason and never inflate the failure rate (they were 11.8% "failures" before). Each request's
latency also goes into an HDR histogram with microsecond resolution (locust's percentiles are whole
milliseconds), written at the end to perf/results/load_latency.<pid>.json for perf/run_load.py to
merge and render. Users:
- MarketMaker: two-sided post-only quotes around the mark, amends them, cancels them;
- Taker: IOC limits across the spread and market orders;
- RetryBot: places orders and backs off exponentially with jitter on refusals and time-outs,
  honouring a retry-after when the venue gives one;
- HighLeverageTrader: isolated margin at the highest leverage on each symbol, then keeps adding to
  a long until a small fall liquidates it (at 125x an isolated BTC position holds 0.8% of its
  notional against a trigger at 0.6%: a 0.2% move), so a load run exercises the liquidator.
Environment: PERPX_CONFIG / PERPX_RUN_DIR pick the cluster (default: ./var of a running one).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import gevent
import msgspec
import zmq.green as zmq
from hdrh.histogram import HdrHistogram
from locust import User, between, events, task

from cluster import config
from cluster.runstate import read_status
from cluster.protocol import (
    Ack, AmendOrder, CancelOrder, Codec, Error, IndexMark, Logon, LogonAck, MarketData, PlaceOrder,
    Report, SetLeverage, SetMarginMode,
)

SYMBOLS = ("BTC-PERP", "ETH-PERP")
# Answers that say the system failed, not that a rule refused the request.
SYSTEM_REASONS = frozenset({"internal_error", "not_logged_on", "invalid_message"})
RESULTS = Path(__file__).resolve().parent / "results"
HDR_RANGE_US = (1, 60_000_000, 3)  # 1 us to 60 s, 3 significant digits
LATENCY: dict[str, HdrHistogram] = {}  # request name -> latency in us, answered or refused
REFUSALS: Counter[tuple[str, str]] = Counter()  # (request name, reason) -> count


def record_latency(name: str, micros: int) -> None:
    hist = LATENCY.get(name)
    if hist is None:
        hist = LATENCY[name] = HdrHistogram(*HDR_RANGE_US)
    hist.record_value(min(max(1, micros), HDR_RANGE_US[1]))


def topology() -> config.Topology:
    run = Path(os.environ.get("PERPX_RUN_DIR", "var")).resolve()
    cfg = os.environ.get("PERPX_CONFIG")
    if not cfg:
        cfg = (read_status(run) or {}).get("config")
    return config.load(cfg, run_dir=str(run))


TOPO = topology()
MARKS: dict[str, int] = {s: TOPO.symbols[s].initial_price for s in SYMBOLS}
_ctx = zmq.Context()


def _watch_marks() -> None:
    sub = _ctx.socket(zmq.SUB)
    sub.connect(TOPO.nodes["gateway"].pub)
    sub.setsockopt(zmq.SUBSCRIBE, b"mark.")
    codec = Codec(MarketData)
    while True:
        try:
            _, frame = sub.recv_multipart()
        except zmq.ZMQError:  # the context is gone: locust is quitting
            return
        for msg in codec.decode(frame):
            if type(msg) is IndexMark:
                MARKS[msg.symbol] = msg.mark


gevent.spawn(_watch_marks)


class Refused(Exception):
    def __init__(self, reason: str, detail: dict) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class PerpxClient:
    """One session: a DEALER, requests answered by req_id, timed and reported to locust."""

    def __init__(self, environment, account: str, timeout: float = 5.0) -> None:
        self.environment = environment
        self.sock = _ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(TOPO.nodes["gateway"].client)
        self.codec = Codec(LogonAck | Error | Report | Ack)
        self.ids = itertools.count(1)
        self.timeout = timeout
        self.account = account
        self.request("logon", Logon(api_key=TOPO.accounts[account].api_key))

    def request(self, name: str, message):
        req_id = next(self.ids)
        message = msgspec.structs.replace(message, req_id=req_id)
        start = time.perf_counter()
        exc, answer = None, None
        try:
            self.sock.send(self.codec.encode([message]))
            deadline = start + self.timeout
            while answer is None:
                left = deadline - time.perf_counter()
                if left <= 0 or not self.sock.poll(int(left * 1000)):
                    raise TimeoutError(f"no answer in {self.timeout}s")
                for msg in self.codec.decode(self.sock.recv()):
                    key = msg.ref if type(msg) is Report else getattr(msg, "req_id", 0)
                    if key == req_id:
                        answer = msg
            body = answer.event if type(answer) is Report else answer
            if type(body) is Error or type(body).__name__ == "OrderRejected":
                exc = Refused(body.reason, dict(body.detail))
        except Exception as e:  # reported to locust as a failure, never raised into it
            exc = e
        elapsed = time.perf_counter() - start
        refusal = isinstance(exc, Refused) and exc.reason not in SYSTEM_REASONS
        if exc is None or refusal:  # answered: the venue's latency (a timeout is not one)
            record_latency(f"refused: {exc.reason}" if refusal else name, int(elapsed * 1e6))
        if refusal:
            REFUSALS[(name, exc.reason)] += 1
        self.environment.events.request.fire(
            request_type="perpx", name=f"refused: {exc.reason}" if refusal else name,
            response_time=elapsed * 1000, response_length=0,
            exception=None if refusal else exc, context={"account": self.account})
        if isinstance(exc, Refused) and exc.reason == "not_logged_on" and name != "relogon":
            # the gateway restarted (or expired the session): counted as the failure it was, then
            # log on again, reported as "relogon", so that the user's next requests are served
            self.request("relogon", Logon(api_key=TOPO.accounts[self.account].api_key))
        if exc is not None:
            raise exc
        return answer

    def place(self, name: str, symbol: str, side: int, qty: int, **fields):
        return self.request(name, PlaceOrder(symbol=symbol, side=side, qty=qty, **fields))


class PerpxUser(User):
    abstract = True
    accounts: tuple[str, ...] = ("taker1",)

    def on_start(self) -> None:
        self.client = PerpxClient(self.environment, random.choice(self.accounts))


class MarketMaker(PerpxUser):
    accounts = ("mm1", "mm2")
    wait_time = between(0.2, 0.5)

    def on_start(self) -> None:
        super().on_start()
        self.live: list[tuple[str, int]] = []

    @task(4)
    def quote(self) -> None:
        symbol = random.choice(SYMBOLS)
        mark = MARKS[symbol]
        gap = max(1, mark // 1000 * random.randint(1, 5))
        for side, price in ((1, mark - gap), (-1, mark + gap)):
            try:
                r = self.client.place("quote", symbol, side, random.randint(1, 20), price=price,
                                      post_only=True)
                self.live.append((symbol, r.event.order_id))
            except Exception:
                pass

    @task(2)
    def amend(self) -> None:
        if self.live:
            symbol, order_id = random.choice(self.live)
            try:
                self.client.request("amend", AmendOrder(symbol=symbol, order_id=order_id,
                                                        qty=random.randint(1, 20)))
            except Exception:
                self.live.remove((symbol, order_id))

    @task(3)
    def cancel(self) -> None:
        if self.live:
            symbol, order_id = self.live.pop(0)
            try:
                self.client.request("cancel", CancelOrder(symbol=symbol, order_id=order_id))
            except Exception:
                pass


class Taker(PerpxUser):
    accounts = ("taker1", "taker2")
    wait_time = between(0.3, 1.0)

    @task(2)
    def ioc(self) -> None:
        symbol = random.choice(SYMBOLS)
        side = random.choice((1, -1))
        price = MARKS[symbol] + side * MARKS[symbol] // 300
        try:
            self.client.place("ioc", symbol, side, random.randint(1, 5), price=price, tif="IOC")
        except Exception:
            pass

    @task(1)
    def market(self) -> None:
        try:
            self.client.place("market", random.choice(SYMBOLS), random.choice((1, -1)),
                              random.randint(1, 3), type="market", tif="IOC")
        except Exception:
            pass


class RetryBot(PerpxUser):
    accounts = ("alice", "bob")
    wait_time = between(0.5, 1.5)
    base_backoff = 0.05
    max_backoff = 5.0

    @task
    def place_with_retries(self) -> None:
        symbol = random.choice(SYMBOLS)
        # One client order id for every attempt: an attempt that reached the venue but whose
        # answer was lost (a timeout) is answered again, marked duplicate, instead of trading twice.
        coid = f"rb-{random.getrandbits(64):016x}"
        for attempt in range(6):
            try:
                self.client.place("retry_place", symbol, 1, 1, client_order_id=coid,
                                  price=MARKS[symbol] - MARKS[symbol] // 100, tif="IOC")
                return
            except Refused as exc:
                retry_after = exc.detail.get("retry_after_ms")
                if retry_after is None and exc.reason not in ("insufficient_margin",):
                    return  # a refusal that waiting will not change
                pause = (int(retry_after) / 1000) if retry_after is not None else 0.0
            except Exception:
                pause = 0.0
            backoff = min(self.max_backoff, self.base_backoff * 2 ** attempt)
            gevent.sleep(max(pause, random.uniform(0, backoff)))  # full jitter


class HighLeverageTrader(PerpxUser):
    accounts = ("alice", "bob")
    wait_time = between(1.0, 2.0)

    def on_start(self) -> None:
        super().on_start()
        for symbol in SYMBOLS:
            # isolated, so that the position alone (not the account's whole wallet) carries it;
            # refused while a position or orders are open (an earlier run's), which is fine
            for name, setting in (("set_margin_mode", SetMarginMode(symbol=symbol, mode="isolated")),
                                  ("set_leverage", SetLeverage(
                                      symbol=symbol, leverage=TOPO.symbols[symbol].max_leverage))):
                try:
                    self.client.request(name, setting)
                except Exception:
                    pass

    @task
    def add_to_position(self) -> None:
        symbol = random.choice(SYMBOLS)
        try:
            self.client.place("lever_up", symbol, 1, random.randint(5, 30), type="market",
                              tif="IOC")
        except Exception:
            pass


@events.quitting.add_listener
def _close(environment, **kwargs) -> None:
    write_latency()
    _ctx.destroy(linger=0)


def write_latency() -> None:
    """This process's histograms (encoded) and refusals, for perf/run_load.py to merge: with
    --processes N every worker writes its own file."""
    if not LATENCY and not REFUSALS:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"histograms": {name: h.encode().decode() for name, h in LATENCY.items()},
            "refusals": [[name, reason, n] for (name, reason), n in REFUSALS.items()]}
    (RESULTS / f"load_latency.{os.getpid()}.json").write_text(json.dumps(data))
