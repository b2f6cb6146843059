"""asyncio client SDK for perpx: logon, place / amend / cancel, book, account, ping, and streams of
execution reports and market data.

    async with Client(endpoint, api_key=key) as c:
        accepted = await c.place("BTC-PERP", BUY, qty=10, price=300000)
        report = await c.reports.get()

Human units: `c.ticks("BTC-PERP", "30000.5")`, `c.lots("BTC-PERP", "0.01")` and `c.atoms("250.5")`
convert exactly with the tick and lot sizes and the collateral's atom the gateway sent at logon
(`price_str`, `qty_str` and `money_str` back); an off-grid value raises UnitError, it is never
rounded. examples/quickstart.py is a first client to start from.

A client that logged on with an API key logs on again by itself when the gateway no longer knows its
session (a restarted gateway refuses `not_logged_on` before forwarding anything, so the request is
sent once more; `relogons` counts it). A request in flight when the gateway died is answered by
nobody: it times out, and only the account's reports can tell whether it reached the venue.

A client that only listens (a maker waiting for its fills) sends nothing, yet the gateway forgets a
session silent for 10 minutes, and a restarted gateway forgets every session: its reports would
stop without a word. So after `keepalive` seconds without a request (60 by default) the client
logs on again, which only the gateway handles: the session is kept, or re-made after a restart.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from decimal import Decimal
from typing import Union

import msgspec
import zmq
import zmq.asyncio

from cluster.protocol import (
    Ack, AccountView, AdjustIsolatedMargin, AmendOrder, BookLevels, CancelAll, CancelOrder, Codec,
    Deposit, Error, GetAccount, GetBook, GetLimits, GetOrders, IndexMark, Logon, LogonAck, Logout, MarketData,
    MAX_UNITS, Notice, OrdersView, Ping, Signed, PlaceOrder, Pong, Reply, Report, SetLeverage, SetMarginMode,
    Withdraw, encode_one,
)
from cluster.backoff import Backoff
from cluster.signing import signer
from cluster.sockets import wake_reader
from cluster.rules.units import UnitError, from_units, to_units


class RequestFailed(Exception):
    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.reason}: {error.detail}")
        self.error = error


REPORTS_KEPT = 10_000
NOTICES_KEPT = 1000
KEEPALIVE_S = 60.0  # the gateway forgets a session silent for 10 minutes


def _server_codec() -> Codec:
    return Codec(Union[LogonAck, Error, Report, Pong, BookLevels, AccountView, Ack, Reply,
                       OrdersView, Notice])


class Forwarding:
    """A forwarder's logon (#25, the REST facade): first its own key's (the "forward" scope,
    signed with `secret`), then the client's key for the client's `address`. `lock` serializes
    the logons of every connection sharing the keys (their logon nonces must arrive in order)."""

    def __init__(self, api_key: str, secret: bytes, address: str,
                 lock: asyncio.Lock | None = None) -> None:
        self.api_key, self.secret, self.address = api_key, secret, address
        self.lock = lock or asyncio.Lock()


class Client:
    def __init__(self, endpoint: str, *, api_key: str | None = None,
                 market_data: str | None = None, timeout: float = 5.0,
                 ctx: zmq.asyncio.Context | None = None, keepalive: float = KEEPALIVE_S,
                 secret: bytes | None = None, ed25519_key: bytes | None = None,
                 backoff: Backoff | None = None, forwarding: Forwarding | None = None,
                 server_key: bytes | None = None) -> None:
        self.endpoint = endpoint
        # the gateway's public CURVE key (z85) when its client endpoint requires CurveZMQ
        # (`client_curve`; RUN/gateway.pub, or cluster.curve.client_server_key(topo)); the client
        # brings a fresh keypair of its own: who it is, its signed requests say
        self.server_key = server_key
        self.api_key = api_key
        self.timeout = bounded_timeout(timeout)
        self.market_data_endpoint = market_data
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.asyncio.Context()
        self._codec = _server_codec()
        self._md_codec = Codec(MarketData)
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        # Execution reports nobody asked for (fills, cancels, triggers). Bounded: an SDK user that
        # never reads them keeps the newest REPORTS_KEPT, and `reports_dropped` says how many went.
        self.reports: asyncio.Queue[Report] = asyncio.Queue(maxsize=REPORTS_KEPT)
        self.reports_dropped = 0
        self.notices: deque[Notice] = deque(maxlen=NOTICES_KEPT)
        self.relogons = 0  # times the client logged on again after the gateway forgot it
        self.account: str | None = None
        self.symbols: dict[str, dict] = {}
        self.collateral = self.atom = ""  # told at logon: money is counted in atoms of this
        self._sock = None
        self._md = None
        self._reader = None
        self.keepalive = keepalive  # seconds of silence before the session is renewed; 0: never
        # the API key's HMAC secret or Ed25519 private key: every request is then sent Signed
        self._signer = signer(secret, ed25519_key)
        self.backoff = backoff  # pacing and retries (cluster/backoff.py); None: neither
        self.session = 0  # the gateway's session number (signed into every request)
        self._last_nonce = 0
        self.keepalives = 0  # times it was
        self._last_sent = 0.0  # loop time of the last request sent
        self._keeper = None
        self.forwarding = forwarding

    async def __aenter__(self) -> Client:
        try:
            await self.connect()
        except BaseException:  # a refused logon: release the socket and its context (a context
            await self.close()  # left open holds the interpreter's exit)
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> None:
        self._sock = self.ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if self.server_key is not None:
            public, secret = zmq.curve_keypair()
            self._sock.curve_publickey, self._sock.curve_secretkey = public, secret
            self._sock.curve_serverkey = self.server_key
        self._sock.connect(self.endpoint)
        self._reader = asyncio.create_task(self._read())
        if self.api_key is not None:
            await self._log_on()
            if self.keepalive > 0:
                self._keeper = asyncio.create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            idle = loop.time() - self._last_sent
            if idle < self.keepalive:
                await asyncio.sleep(self.keepalive - idle)
                continue
            try:
                if self.forwarding is None:
                    await self._log_on()
                else:  # a logon again would leave the account for a moment (reports missed);
                    await self._ask(Ping())  # any request keeps a session (a lost one logs on
                    # again at its next request)
                self.keepalives += 1
            except (asyncio.TimeoutError, RequestFailed, zmq.ZMQError):
                await asyncio.sleep(min(self.keepalive, 1.0))  # the gateway is away: try again

    async def close(self) -> None:
        """Log out and release the sockets, in at most about LOGOUT_S + 2 x TASK_STOP_S whatever
        the gateway does: a stop is a stop."""
        if self._keeper is not None:  # first: it must not log on again after the logout
            await stop_tasks([self._keeper])
        if self.account is not None and self._reader is not None and not self._reader.done():
            try:  # tell the gateway, so it does not keep the session until it expires
                await self._ask(Logout(), timeout=LOGOUT_S)
            except (TimeoutError, zmq.ZMQError):
                pass
        if self._reader is not None:
            await stop_tasks([self._reader])
        for sock in (self._sock, self._md):
            if sock is not None:
                sock.close(linger=0)
        if self._own_ctx:
            self.ctx.term()

    async def _read(self) -> None:
        sync = zmq.Socket.shadow(self._sock.underlying)
        while True:
            frames = []
            try:
                while True:
                    frames.append(sync.recv(zmq.NOBLOCK))
            except zmq.Again:
                pass
            if not frames:
                await self._sock.poll(flags=zmq.POLLIN)
                continue
            for frame in frames:
                for msg in self._codec.decode(frame):
                    self._dispatch(msg)

    def _dispatch(self, msg) -> None:
        if type(msg) is Notice:  # a private notice (e.g. a limit that changed, and why)
            self.notices.append(msg)
            return
        key = msg.ref if type(msg) is Report else getattr(msg, "req_id", 0)
        # key 0: an answer to no request of ours (an error about bytes we could not have sent
        # through request()); recv_any() waits under 0 for those.
        fut = self._waiting.pop(key, None) if (key or type(msg) is not Report) else None
        if fut is not None and not fut.done():
            fut.set_result(msg)
        elif type(msg) is Report:
            if self.reports.full():
                self.reports.get_nowait()  # the oldest goes
                self.reports_dropped += 1
            self.reports.put_nowait(msg)

    # ------------------------------------------------------------------ requests

    async def send_raw(self, payload: bytes) -> None:
        """Send bytes as they are (tests of bad input)."""
        await self._sock.send(payload)
        wake_reader(self._sock)

    async def recv_any(self, timeout: float | None = None):
        """Wait for the next answer that no request was waiting for (tests of bad input)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting[0] = fut
        try:
            return await answer_within(fut, bounded_timeout(timeout) if timeout else self.timeout)
        finally:
            self._waiting.pop(0, None)

    async def request(self, message, *, raise_on_error: bool = True):
        answer = await (self._ask(message) if self.backoff is None else self._ask_paced(message))
        if (type(answer) is Error and answer.reason == "not_logged_on" and self.account is not None
                and self.api_key is not None and type(message) not in (Logon, Logout)):
            # The gateway forgot this session (it restarted, or the session expired), and refused
            # the request before it went anywhere: log on again and send it once more.
            await self._log_on()
            self.relogons += 1
            answer = await self._ask(message)
        if raise_on_error and type(answer) is Error:
            raise RequestFailed(answer)
        return answer

    async def _ask_paced(self, message):
        """_ask within the client's own rate, sent again as cluster/backoff.py allows."""
        backoff, waited = self.backoff, 0
        for attempt in range(backoff.max_attempts):
            for _ in range(3):  # (a wait refills the tokens: the second look finds them)
                pace = backoff.pace_ms(message, time.monotonic_ns())
                if not pace:
                    break
                await asyncio.sleep(pace / 1000)
                waited += pace
            try:
                answer = await self._ask(message)
            except asyncio.TimeoutError:
                delay = backoff.retry_ms(message, attempt, waited, timed_out=True)
                if delay is None:
                    raise
            else:
                if type(answer) is not Error:
                    return answer
                delay = backoff.retry_ms(message, attempt, waited, reason=answer.reason,
                                         retry_after_ms=answer.detail.get("retry_after_ms", 0))
                if delay is None:
                    return answer
            await asyncio.sleep(delay / 1000)
            waited += delay
        return answer

    async def _log_on(self) -> None:
        forwarding = self.forwarding
        if forwarding is None:
            ack = await self._ask(Logon(api_key=self.api_key))
        else:
            async with forwarding.lock:
                own, self._signer = self._signer, signer(forwarding.secret)
                try:
                    ack = await self._ask(Logon(api_key=forwarding.api_key))
                finally:
                    self._signer = own
                if type(ack) is not Error:
                    ack = await self._ask(Logon(api_key=self.api_key,
                                                forwarded_for=forwarding.address))
        if type(ack) is Error:
            raise RequestFailed(ack)
        self.take_logon(ack)

    # ------------------------------------------------------------------ signing (cluster/signing.py)

    def next_nonce(self) -> int:
        """Above the last one, and above any earlier connection's with this key (the gateway
        keeps the last logon nonce per key): microseconds of the wall clock."""
        self._last_nonce = max(self._last_nonce + 1, time.time_ns() // 1000)
        return self._last_nonce

    def signed(self, message) -> Signed:
        """`message` inside a Signed: its bytes, a timestamp, a nonce and their HMAC."""
        body = encode_one(message)
        session = 0 if type(message) is Logon else self.session
        ts_ms, nonce = time.time_ns() // 1_000_000, self.next_nonce()
        return Signed(req_id=message.req_id, ts_ms=ts_ms, nonce=nonce, body=body,
                      sig=self._signer(session, ts_ms, nonce, body))

    def set_secret(self, secret: bytes | None = None, ed25519_key: bytes | None = None) -> None:
        """Sign with another secret from now on (a rotated key's)."""
        self._signer = signer(secret, ed25519_key)

    def take_logon(self, ack: LogonAck) -> None:
        """What a logon tells: the account, and the units to speak (symbols, collateral)."""
        self.account = ack.account
        self.session = ack.session
        self.symbols = ack.symbols
        self.collateral, self.atom = ack.collateral, ack.atom

    async def _ask(self, message, timeout: float | None = None):
        """Send one request and wait for its answer (an Error included), at most `timeout` s
        (default the client's)."""
        req_id = next(self._ids)
        message = msgspec.structs.replace(message, req_id=req_id)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        try:
            if self._signer is not None:  # (the signed body is encoded here too)
                frame = self._codec.encode([self.signed(message)])
            else:
                frame = self._codec.encode([message])
        except OverflowError:  # msgpack carries 64-bit integers; the venue takes up to MAX_UNITS
            self._waiting.pop(req_id, None)
            raise UnitError("out_of_range", f"a number in {type(message).__name__} does not fit "
                            f"a 64-bit integer (the venue takes up to {MAX_UNITS})") from None
        await self._sock.send(frame)
        self._last_sent = asyncio.get_running_loop().time()
        wake_reader(self._sock)  # the send may have eaten the edge our reader's poll waits for
        try:
            return await answer_within(fut, timeout or self.timeout)
        finally:
            self._waiting.pop(req_id, None)

    async def place(self, symbol: str, side: int, qty: int, price: int = 0, **fields) -> Report:
        return await self.request(PlaceOrder(symbol=symbol, side=side, qty=qty, price=price, **fields))

    async def amend(self, symbol: str, order_id: int = 0, *, price: int = 0, qty: int = 0,
                    client_order_id: str = "", trigger_price: int = 0) -> Report:
        return await self.request(AmendOrder(symbol=symbol, order_id=order_id, price=price, qty=qty,
                                             client_order_id=client_order_id,
                                             trigger_price=trigger_price))

    async def cancel(self, symbol: str, order_id: int = 0, client_order_id: str = "") -> Report:
        return await self.request(CancelOrder(symbol=symbol, order_id=order_id,
                                              client_order_id=client_order_id))

    async def cancel_all(self, symbol: str = "") -> Report:
        return await self.request(CancelAll(symbol=symbol))

    async def book(self, symbol: str, depth: int = 10):
        return await self.request(GetBook(symbol=symbol, depth=depth))

    async def account_view(self, fills: int = 20):
        """The account (with its latest `fills`, up to the 100 risk keeps)."""
        return await self.request(GetAccount(fills=fills))

    async def open_orders(self, symbol: str = ""):
        """The account's open orders (OrdersView), in `symbol` or all."""
        return await self.request(GetOrders(symbol=symbol))

    async def limits(self, account: str = "") -> Ack:
        """The rate limits in force for this session's account (or, admin, another's) and why."""
        return await self.request(GetLimits(account=account))

    async def ping(self, full: bool = False):
        """Answered by the gateway; `full`: through risk and matching and back (logged on)."""
        return await self.request(Ping(full=full))

    async def set_leverage(self, symbol: str, leverage: int) -> Ack:
        return await self.request(SetLeverage(symbol=symbol, leverage=leverage))

    async def set_margin_mode(self, symbol: str, mode: str) -> Ack:
        return await self.request(SetMarginMode(symbol=symbol, mode=mode))

    async def adjust_isolated_margin(self, symbol: str, amount: int) -> Ack:
        """Atoms into (> 0) or out of (< 0) an isolated position's margin."""
        return await self.request(AdjustIsolatedMargin(symbol=symbol, amount=amount))

    async def deposit(self, account: str, amount: int) -> Ack:
        """Admin scope: credit `amount` atoms to `account`."""
        return await self.request(Deposit(account=account, amount=amount))

    async def withdraw(self, account: str, amount: int) -> Ack:
        return await self.request(Withdraw(account=account, amount=amount))

    # ------------------------------------------------------------------ market data

    async def subscribe(self, *topics: bytes) -> None:
        if self._md is None:
            if not self.market_data_endpoint:
                raise ValueError("no market data endpoint given")
            self._md = self.ctx.socket(zmq.SUB)
            self._md.setsockopt(zmq.LINGER, 0)
            self._md.connect(self.market_data_endpoint)
        for topic in topics or (b"",):
            self._md.setsockopt(zmq.SUBSCRIBE, topic)

    async def market_data(self) -> list:
        """The next batch of market data messages (Trade, BookDelta, IndexMark, notices, ...):
        public, naming no account (an account's alerts come with its reports)."""
        topic, frame = await self._md.recv_multipart()
        return self._md_codec.decode(frame)

    async def next_mark(self, symbol: str, timeout: float = 10.0) -> IndexMark:
        """The next mark the oracle publishes for `symbol` (subscribing to it if need be);
        asyncio.TimeoutError after `timeout` s. Other market data read meanwhile is skipped."""
        await self.subscribe(b"mark." + symbol.encode())

        async def first() -> IndexMark:
            while True:
                for msg in await self.market_data():
                    if type(msg) is IndexMark and msg.symbol == symbol:
                        return msg

        async with asyncio.timeout(bounded_timeout(timeout)):
            return await first()

    # ------------------------------------------------------------------ units

    def ticks(self, symbol: str, price: str | Decimal) -> int:
        return wire_units(to_units(price, Decimal(self.symbols[symbol]["tick_size"]), "price",
                                   "price_off_tick"), "price")

    def lots(self, symbol: str, qty: str | Decimal) -> int:
        return wire_units(to_units(qty, Decimal(self.symbols[symbol]["lot_size"]), "qty",
                                   "qty_off_lot"), "qty")

    def price_str(self, symbol: str, ticks: int) -> str:
        return from_units(ticks, Decimal(self.symbols[symbol]["tick_size"]))

    def qty_str(self, symbol: str, lots: int) -> str:
        return from_units(lots, Decimal(self.symbols[symbol]["lot_size"]))

    def atoms(self, amount: str | Decimal) -> int:
        """An amount of collateral ('250.5') in atoms, exactly (UnitError off the atom grid)."""
        return wire_units(to_units(amount, Decimal(self.atom), "amount", "amount_not_whole_atoms"),
                          "amount")

    def money_str(self, atoms: int) -> str:
        return from_units(atoms, Decimal(self.atom))


LOGOUT_S = 1.0  # how long close() waits for the gateway to acknowledge a logout
TASK_STOP_S = 1.0  # how long a cancelled task may take to finish


def bounded_timeout(seconds: float) -> float:
    """`seconds` if it is a usable bound on a wait (finite, above 0), else ValueError: an infinite
    or NaN timeout would be a wait with no end, and zero or less one that cannot succeed."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"timeout {seconds!r}: a finite number of seconds above 0")
    return float(seconds)


async def answer_within(fut: asyncio.Future, seconds: float):
    """`fut`'s result, or TimeoutError after `seconds`. Not asyncio.wait_for: on Python 3.11 it
    returns the result when a cancel arrives together with the answer, so the cancel is lost and a
    loop that was told to stop goes on (the demo that ran 10 minutes past its stop). A timeout
    scope re-raises a cancel that came from outside."""
    async with asyncio.timeout(seconds):
        return await fut


async def stop_tasks(tasks, grace: float = TASK_STOP_S) -> list[asyncio.Task]:
    """Cancel `tasks` and wait for them at most `grace` s; the ones still running are returned
    (their owner says so and goes on stopping) instead of being awaited without end."""
    tasks = [t for t in tasks if t is not None]
    for task in tasks:
        task.cancel()
    if not tasks:
        return []
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in tasks:  # a task that ended with an error has said it; do not warn at exit
        if task.done() and not task.cancelled():
            task.exception()
    return list(pending)


def wire_units(units: int, what: str) -> int:
    """`units` if the wire can carry them (the venue judges sign and size rules), else UnitError."""
    if abs(units) > MAX_UNITS:
        raise UnitError("out_of_range", f"{what} is {units} units, more than the wire's {MAX_UNITS}")
    return units


__all__ = ["Client", "RequestFailed", "answer_within", "bounded_timeout", "encode_one", "stop_tasks"]


def venue_client(topo, *, endpoint: str | None = None, market_data: bool = False,
                 **kwargs) -> Client:
    """A Client of `topo`'s gateway (or `endpoint`: a netsim proxy in front of it), with the
    gateway's CURVE key when its client endpoint requires CurveZMQ (`client_curve`)."""
    from cluster import curve

    gw = topo.nodes["gateway"]
    return Client(endpoint or gw.client, market_data=gw.pub if market_data else None,
                  server_key=curve.client_server_key(topo), **kwargs)
