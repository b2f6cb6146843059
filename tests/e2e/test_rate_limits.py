"""Rate limits on the real cluster (#20): a flood from one key is throttled with retry_after_ms
and escalates to a ban that ends, while a second, well-behaved client keeps its latency."""

from __future__ import annotations

import asyncio
import statistics
import multiprocessing
import time

import msgspec
import pytest
import zmq

from cluster.client import Client, RequestFailed, _server_codec
from cluster.protocol import Error, Logon, Ping

from tests.conftest import ClusterHandle, stop_and_reap
from tests.e2e.helpers import log_events, shock

pytestmark = pytest.mark.e2e

KEY_WEIGHT = {"limit": 200, "window_ms": 1000, "burst": 200}
BAN = {"ban_after": 50, "ban_window_ms": 10_000, "ban_ms": 1500}


@pytest.fixture
def limited(tmp_path):
    handle = ClusterHandle(tmp_path, node_settings={"gateway": {"rate_limits": {
        "key_weight": KEY_WEIGHT, **BAN}}})
    try:
        handle.up()  # inside the try: a start that fails half-way is stopped too
        yield handle
    finally:
        stop_and_reap(handle)


def _flood(endpoint: str, api_key: str, per_batch: int, interval_s: float, stop, out) -> None:
    """The flood's loop, in a process of its own (see Flood)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    codec = _server_codec()
    sock.send(msgspec.msgpack.encode(Logon(api_key=api_key)))
    batch = msgspec.msgpack.encode([Ping(req_id=i + 1, full=True) for i in range(per_batch)])
    answers: dict[str, int] = {}
    first: dict[str, bytes] = {}  # the first refusal of each reason, as sent
    next_at = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_at:
            sock.send(batch)
            next_at += interval_s
        while sock.poll(0):
            for msg in codec.decode(sock.recv()):
                reason = msg.reason if type(msg) is Error else type(msg).__name__
                answers[reason] = answers.get(reason, 0) + 1
                if type(msg) is Error and reason not in first:
                    first[reason] = msgspec.msgpack.encode(msg)
        time.sleep(max(0.0, min(next_at - time.monotonic(), 0.001)))
    sock.close()
    ctx.term()
    out.put((answers, first))


class Flood:
    """One key sending batches of full-path pings open loop, counting the answers by reason. In a
    process of its own: as a thread of the test's process it held the interpreter the measuring
    client runs in, and its own stalls were charged to the venue (p99 52-76 ms, 1 run in 3)."""

    def __init__(self, endpoint: str, api_key: str, per_batch: int = 100,
                 interval_s: float = 0.005) -> None:
        self.per_batch, self.interval_s = per_batch, interval_s
        mp = multiprocessing.get_context("spawn")
        self.stop = mp.Event()
        self._out = mp.Queue()
        self._proc = mp.Process(target=_flood, args=(endpoint, api_key, per_batch, interval_s,
                                                     self.stop, self._out), daemon=True)
        self.answers: dict[str, int] = {}
        self.errors: list[Error] = []

    def start(self) -> None:
        self._proc.start()

    def join(self, timeout: float) -> None:
        try:
            self.answers, first = self._out.get(timeout=timeout)
            self.errors = [msgspec.msgpack.decode(raw, type=Error) for raw in first.values()]
        finally:
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.kill()


async def ping_latencies(client: Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await client.ping(full=True)
        out.append((time.perf_counter() - start) * 1e6)
        await asyncio.sleep(0.002)
    return out


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def test_a_flood_is_throttled_then_banned_and_a_well_behaved_client_keeps_its_latency(limited):
    async def well_behaved(n: int) -> list[float]:
        async with Client(limited.endpoint(), api_key=limited.api_key("bob")) as bob:
            await bob.ping(full=True)
            return await ping_latencies(bob, n)

    unloaded = asyncio.run(well_behaved(300))
    flood = Flood(limited.endpoint(), limited.api_key("alice"))
    flood.start()
    bound = 2 * p99(unloaded) + 2_000  # the flood costs the other client at most 2x its p99
    tries: list[float] = []
    try:
        time.sleep(1.0)  # (the flood's process is spawned: under way once answers come back)
        # As the bench counts a rate unsustainable only after TRIES misses in a row: this 2-core
        # host stalls message delivery for 50-100 ms a few times a minute (measured in the null
        # pipeline too), and one stall among 300 pings is their p99. Three windows at most.
        for _ in range(3):
            loaded = asyncio.run(well_behaved(300))
            tries.append(p99(loaded))
            if tries[-1] <= bound:
                break
    finally:
        flood.stop.set()
        flood.join(5)
    print(f"\nwell-behaved client p99: unloaded {p99(unloaded):,.0f} us, during a flood of "
          f"{flood.per_batch / flood.interval_s:,.0f} pings/s from another key "
          f"{', then '.join(f'{t:,.0f}' for t in tries)} us; flood answers {flood.answers}")
    assert flood.answers.get("rate_limited", 0) > 0 and flood.answers.get("banned", 0) > 0
    throttled = next(e for e in flood.errors if e.reason == "rate_limited")
    assert throttled.detail["rule"] == "key_weight" and throttled.detail["retry_after_ms"] > 0
    assert throttled.detail["limit"] == KEY_WEIGHT["burst"] and throttled.usage
    banned = next(e for e in flood.errors if e.reason == "banned")
    assert banned.detail["until_ms"] > time.time() * 1000 - 60_000
    assert 0 < banned.detail["retry_after_ms"] <= BAN["ban_ms"] << 6
    # relative bound (a shared machine): the flood costs the other client at most 2x its p99,
    # with 2 ms of slack for the scheduler, in one of three windows of 300 pings
    assert tries[-1] <= bound, (p99(unloaded), tries)


def test_a_ban_ends_at_the_time_it_gave(limited):
    async def run():
        async with Client(limited.endpoint(), api_key=limited.api_key("taker1")) as c:
            banned: list = []
            for _ in range(20):  # bursts until banned (the bucket refills meanwhile)
                answers = await asyncio.gather(*(c.ping(full=True) for _ in range(
                    KEY_WEIGHT["burst"] + BAN["ban_after"])), return_exceptions=True)
                refusals = [a.error for a in answers if isinstance(a, RequestFailed)]
                banned = [e for e in refusals if e.reason == "banned"]
                if banned:
                    break
            assert banned, [e.reason for e in refusals][:5]
            wait_ms = max(e.detail["retry_after_ms"] for e in banned)
            with pytest.raises(RequestFailed) as still:
                await c.ping(full=True)
            assert still.value.error.reason == "banned"
            await asyncio.sleep(wait_ms / 1000 + 0.05)
            assert [n for n, _ in (await c.ping(full=True)).hops][-1] == "gateway"

    asyncio.run(run())


ORDERS = {"limit": 20, "window_ms": 1000, "burst": 20}


@pytest.fixture
def orders_limited(tmp_path):
    handle = ClusterHandle(tmp_path, node_settings={"gateway": {"rate_limits": {
        "account_orders": ORDERS}}})
    try:
        handle.up()  # inside the try: a start that fails half-way is stopped too
        yield handle
    finally:
        stop_and_reap(handle)


async def burst_of_orders(client: Client, n: int, price: int) -> tuple[int, list[Error]]:
    """n orders at once: how many the gateway let through, and its throttles."""
    answers = await asyncio.gather(*(client.place("BTC-PERP", 1, qty=1, price=price)
                                     for _ in range(n)), return_exceptions=True)
    throttled = [a.error for a in answers
                 if isinstance(a, RequestFailed) and a.error.reason == "rate_limited"]
    return n - len(throttled), throttled


def test_high_volatility_halves_the_order_rate_tells_the_client_why_and_cancels_still_pass(
        orders_limited):
    from tests.e2e.test_liquidation import shock

    cluster = orders_limited

    async def run():
        async with Client(cluster.endpoint(), api_key=cluster.api_key("alice")) as alice:
            view = (await alice.limits()).detail
            assert (view["regime"], view["account_orders.limit"]) == ("normal", 20)
            price = cluster.topo.symbols["BTC-PERP"].initial_price * 99 // 100
            before, _ = await burst_of_orders(alice, 30, price)
            shock(cluster, "BTC-PERP", 100_000)  # every venue 10% up at once
            deadline = time.monotonic() + 20
            while not alice.notices:
                assert time.monotonic() < deadline, (
                    "no notice of the tighter limit; the oracle said: "
                    f"{log_events(cluster, 'oracle', 'Regime', 'OracleMode', 'OracleSource')[-12:]}")
                await asyncio.sleep(0.05)
            notice = alice.notices[0]
            print(f"\nnotice: {notice.rule} {notice.decision} {notice.numbers}")
            assert notice.rule == "gateway.limit.account_orders" and notice.subject == "alice"
            assert (notice.numbers["regime"], notice.numbers["old_limit"],
                    notice.numbers["new_limit"]) == ("high_volatility", 20, 10)
            assert notice.numbers["realized_vol_ppm"] > notice.numbers["threshold_ppm"]
            await asyncio.sleep(1.1)  # a full window: the bucket holds its (new) capacity
            after, throttled = await burst_of_orders(alice, 30, price)
            print(f"orders let through from a burst of 30: {before} before, {after} after")
            assert before >= 20 and after <= 12 and after < before / 2 + 2
            assert throttled[0].detail["limit"] == 10
            assert throttled[0].detail["regime"] == "high_volatility"
            # the order bucket is empty, yet a cancel is not throttled
            try:  # (risk answers that no such order is open: the cancel got through)
                answer = await alice.cancel("BTC-PERP", order_id=10**12)
            except RequestFailed as exc:
                answer = exc.error
            assert getattr(answer, "reason", "") != "rate_limited", answer
        shown = cluster.cli_json("limits", "show", "alice")
        assert (shown["regime"], shown["account_orders.limit"],
                shown["account_orders.base_limit"]) == ("high_volatility", 10, 20)
        explained = cluster.cli_json("explain", "account", "alice")["decisions"]
        assert any(d.get("rule") == "gateway.limit.account_orders" for d in explained), explained

    asyncio.run(run())
