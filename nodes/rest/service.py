"""REST facade node shell: the gateway's market data in (as a client subscribes to it), the
Binance-compatible HTTP API out, on uvicorn + httptools (perf/http_stack.py measured the choice).
Everything it decides is in nodes/rest/facade.py; this file only carries bytes."""

from __future__ import annotations

import contextlib

import msgspec
import uvicorn

from cluster.config import Topology
from cluster.protocol import Codec, MarketData
from cluster.transport import NodeShell
from nodes.rest.facade import Facade

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
    md_codec = Codec(MarketData)
    stats = shell.stats
    stats.update(http_requests=0, http_errors=0, sessions=0, md_bad=0)

    def on_market_data(frames: list) -> None:
        for parts in frames:
            try:
                messages = md_codec.decode(parts[-1])
            except (msgspec.DecodeError, msgspec.ValidationError):
                stats["md_bad"] += 1
                continue
            facade.on_market_data(messages)

    gw = topo.nodes["gateway"]
    shell.subscribe(gw.pub, [b"md.", b"mark.", b"funding."], None, raw=on_market_data)

    async def app(scope, receive, send):
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
                status, result, headers = await facade.handle(
                    scope["method"], scope["path"], scope["query_string"].decode("latin-1"),
                    body.decode("latin-1"), api_key, address)
                break
        stats["http_requests"] += 1
        stats["http_errors"] += status >= 400
        stats["sessions"] = len(facade.sessions)
        raw = [(b"content-type", b"application/json")] + [
            (k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": JSON.encode(result)})

    host, port = split_endpoint(conf.http)
    server = _Server(uvicorn.Config(app, host=host, port=port, loop="none", http="httptools",
                                    ws="none", lifespan="off", log_level="warning",
                                    access_log=False))
    shell.background(server.serve)
    shell.facade = facade  # for the metrics endpoint and tests in-process

    def on_stop() -> None:
        server.should_exit = True

    return on_stop
