"""Which HTTP stack the REST facade stands on (#25): the server's own CPU per request, measured.

Each candidate serves the same two routes a ccxt client hits most (a GET with a query string, a
POST with a form body), answering msgspec-encoded JSON, in its own process on uvloop; one client
process (aiohttp, keep-alive, CONCURRENCY connections) drives it for SECONDS. The figure that
decides is the server's CPU time per request (user + sys of the server process, from
/proc/PID/stat), since on a 2-core host every microsecond the facade spends is taken from the
gateway; requests/s is reported too.

    python -m perf.http_stack [--seconds 4] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import time
from urllib.parse import parse_qsl

import msgspec

BODY = {"symbol": "BTCUSDT", "lastPrice": "30000.0", "volume": "12.5", "closeTime": 1700000000000}
ENC = msgspec.json.Encoder()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_aiohttp(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def get(request):
        dict(parse_qsl(request.query_string))
        return web.Response(body=ENC.encode(BODY), content_type="application/json")

    async def post(request):
        dict(parse_qsl((await request.read()).decode()))
        return web.Response(body=ENC.encode(BODY), content_type="application/json")

    app = web.Application()
    app.router.add_get("/fapi/v1/ticker/24hr", get)
    app.router.add_post("/fapi/v1/order", post)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_uvicorn(port: int) -> None:
    import uvicorn

    headers = [(b"content-type", b"application/json")]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        dict(parse_qsl((body or scope["query_string"]).decode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": ENC.encode(BODY)})

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False, lifespan="off")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(port: int, seconds: float, concurrency: int) -> int:
    import aiohttp

    done = 0
    deadline = time.monotonic() + seconds
    body = "timestamp=1&symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.01&price=30000&signature=ab"
    async with aiohttp.ClientSession() as http:
        async def one(i: int) -> None:
            nonlocal done
            while time.monotonic() < deadline:
                if i % 2:
                    async with http.get(f"http://127.0.0.1:{port}/fapi/v1/ticker/24hr?symbol=BTCUSDT") as r:
                        await r.read()
                else:
                    async with http.post(f"http://127.0.0.1:{port}/fapi/v1/order", data=body,
                                         headers={"content-type": "application/x-www-form-urlencoded"}) as r:
                        await r.read()
                done += 1
        await asyncio.gather(*(one(i) for i in range(concurrency)))
    return done


def _wait_port(port: int, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def measure(name: str, target, seconds: float, concurrency: int) -> dict:
    port = _free_port()
    proc = mp.get_context("spawn").Process(target=target, args=(port,), daemon=True)
    proc.start()
    try:
        _wait_port(port)
        asyncio.run(_drive(port, 0.5, concurrency))  # warm up
        cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        n = asyncio.run(_drive(port, seconds, concurrency))
        cpu, wall = _cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
    finally:
        proc.kill()
        proc.join()
    return {"stack": name, "requests": n, "req_per_s": round(n / wall),
            "server_cpu_us_per_req": round(cpu / n * 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    for name, target in (("aiohttp", serve_aiohttp), ("uvicorn+httptools (raw ASGI)", serve_uvicorn)):
        print(msgspec.json.encode(measure(name, target, args.seconds, args.concurrency)).decode())


if __name__ == "__main__":
    main()
