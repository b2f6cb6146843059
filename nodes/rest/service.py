"""REST facade node shell: the gateway's market data in (as a client subscribes to it), the
Binance-compatible HTTP API out, on uvicorn + httptools (perf/http_stack.py measured the choice).
Everything it decides is in nodes/rest/facade.py; this file only carries bytes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import parse_qsl

import msgspec
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST

from cluster.config import Topology
from cluster.protocol import Codec, MarketData, NetsimTable
from cluster.runstate import status_path
from cluster.signing import KEY_FILE_CHECK_MS, KeyFileWatch
from cluster.transport import NodeShell
from nodes.rest.facade import Facade, now_ms
from nodes.rest.metrics import Metrics
from nodes.rest.streams import Connection, stream_name

JSON = msgspec.json.Encoder()
MAX_BODY = 64 * 1024  # a form body of an order is ~300 bytes; larger is refused unread


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the node shell owns SIGTERM / SIGINT
        yield


def split_endpoint(http: str) -> tuple[str, int]:
    host, _, port = http.rpartition(":")
    return host or "127.0.0.1", int(port)


def build(shell: NodeShell, topo: Topology):
    conf = shell.conf
    facade = Facade(topo, quote=conf.quote_asset, weight_per_minute=conf.weight_per_minute,
                    secrets_file=conf.secrets)
    metrics = Metrics(facade, status_path(topo.run_dir))
    md_codec = Codec(MarketData)
    stats = shell.stats
    stats.update(http_requests=0, http_errors=0, sessions=0, md_bad=0, ws_connections=0)

    def on_market_data(frames: list) -> None:
        for parts in frames:
            try:
                messages = md_codec.decode(parts[-1])
            except (msgspec.DecodeError, msgspec.ValidationError):
                stats["md_bad"] += 1
                continue
            try:
                facade.on_market_data(messages)
                for msg in messages:
                    metrics.market.on_message(msg)
            except Exception as exc:  # a bug: counted and logged, the next batch goes on
                shell.failed("market_data_failed", type(messages[0]).__name__, exc)

    netsim_codec = Codec(NetsimTable)

    def on_netsim(frames: list) -> None:
        for parts in frames:
            try:
                for table in netsim_codec.decode(parts[-1]):
                    metrics.market.on_message(table)
            except (msgspec.DecodeError, msgspec.ValidationError):
                stats["md_bad"] += 1

    if topo.supervisor.netsim:
        shell.subscribe(topo.supervisor.netsim, [b""], None, raw=on_netsim)
    gw = topo.nodes["gateway"]
    shell.subscribe(gw.pub, [b"md.", b"mark.", b"funding.", b"alert.", b"regime.", b"oracle."], None,
                    raw=on_market_data)

    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            return await websocket(scope, receive, send)
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                status, result, headers = 413, {"code": -1000, "msg": f"body over {MAX_BODY} bytes"}, {}
                break
            if not message.get("more_body"):
                api_key = ""
                for name, value in scope["headers"]:
                    if name == b"x-mbx-apikey":
                        api_key = value.decode("latin-1")
                address = (scope.get("client") or ("?",))[0]
                if scope["path"] == "/metrics" and scope["method"] == "GET":
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]})
                    await send({"type": "http.response.body", "body": metrics.render()})
                    return
                started = time.perf_counter()
                status, result, headers = await facade.handle(
                    scope["method"], scope["path"], scope["query_string"].decode("latin-1"),
                    body.decode("latin-1"), api_key, address)
                route = scope["path"] if (scope["method"], scope["path"]) in facade.routes else "unknown"
                metrics.latency.labels(route).observe(time.perf_counter() - started)
                break
        stats["http_requests"] += 1
        stats["http_errors"] += status >= 400
        stats["sessions"] = len(facade.sessions)
        raw = [(b"content-type", b"application/json")] + [
            (k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": JSON.encode(result)})

    async def websocket(scope, receive, send):
        """ccxt.pro's URLs: /public/ws/N (depth), /market/ws/N (aggTrade, markPrice),
        /private/ws?listenKey=K (user data); /ws/N and /ws/<listenKey> too."""
        path = scope["path"].rstrip("/")
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        listen_key = query.get("listenKey") or (path.rsplit("/", 1)[-1] if path.startswith("/ws/") else "")
        owner = facade.streams.owner(listen_key, now_ms()) if listen_key else None
        if not (path.endswith("/ws") or path.split("/")[-2:-1] == ["ws"]):
            await receive()
            await send({"type": "websocket.close", "code": 4404})
            return
        if (path.startswith("/private") or query.get("listenKey")) and owner is None:
            await receive()
            await send({"type": "websocket.close", "code": 4401, "reason": "invalid listenKey"})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        conn = Connection(owner)
        facade.streams.connections.add(conn)
        stats["ws_connections"] += 1
        writer = asyncio.ensure_future(write(conn, send))
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                reply = control(conn, message.get("text") or (message.get("bytes") or b"").decode())
                if reply is not None:
                    conn.queue.put_nowait(reply)
        finally:
            facade.streams.connections.discard(conn)
            writer.cancel()

    def control(conn: Connection, text: str) -> dict | None:
        """SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, Binance's shapes; errors as its codes."""
        try:
            request = msgspec.json.decode(text)
            method, params, ident = request["method"], request.get("params", []), request.get("id")
        except (msgspec.DecodeError, KeyError, TypeError):
            return {"error": {"code": 2, "msg": "Invalid request: expected {method, params, id}"}}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.subs), "id": ident}
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            return {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": ident}
        names = [stream_name(str(p)) for p in params]
        if None in names:
            return {"error": {"code": 2, "msg": f"Invalid request: unknown stream in {params}"}, "id": ident}
        if method == "SUBSCRIBE":
            conn.subs.update(names)
        else:
            conn.subs.difference_update(names)
        return {"result": None, "id": ident}

    async def write(conn: Connection, send) -> None:
        try:
            while not conn.overflowed:
                event = await conn.queue.get()
                await send({"type": "websocket.send", "text": JSON.encode(event).decode()})
            await send({"type": "websocket.close", "code": 1008, "reason": "too slow: queue full"})
        except Exception as exc:  # the client went away: the reader ends too
            shell.log.info("ws_write_ended", error=repr(exc)[:200])

    key_file_watch = KeyFileWatch(topo.run_dir)

    def reload_keys() -> None:
        """Keys made, rotated or revoked with `perpx keys` while the facade runs (as the gateway)."""
        if conf.secrets or not key_file_watch.changed():
            return
        try:
            changed = facade.reload_secrets()
        except (OSError, ValueError) as exc:
            shell.log.error("key_file_unreadable", error=str(exc)[:300])
            return
        shell.log.info("keys_reloaded", keys=len(facade.secrets), changed=changed)

    shell.every(KEY_FILE_CHECK_MS, reload_keys)

    def expire_sessions() -> None:
        ended = facade.expire_idle()
        if ended:
            shell.log.info("sessions_expired", count=ended, sessions=len(facade.sessions))

    shell.every(30_000, expire_sessions)
    host, port = split_endpoint(conf.http)
    server = _Server(uvicorn.Config(app, host=host, port=port, loop="none", http="httptools",
                                    ws="websockets", lifespan="off", log_level="warning",
                                    access_log=False))
    shell.background(server.serve)

    def on_stop() -> None:
        server.should_exit = True

    return on_stop
