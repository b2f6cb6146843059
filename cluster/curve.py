"""CurveZMQ on the internal links: every socket between the cluster's own processes is encrypted and
authenticated, so a local process that can reach an internal endpoint but holds none of the
cluster's keys cannot inject a mark, a fill, a heartbeat, a netsim table or a feed fault: its
handshake is refused (ZAP, RFC 27) and nothing it sends is ever read.

Keys: one CURVE keypair per process role (each node, the supervisor, and `tools` for the CLI and
tests), made afresh at every `cluster up` under `<run>/curve/`: every public key in public.json,
each secret in its own ROLE.secret (0600). A process loads its own role's secret only, so the
tools' key (what an operator's CLI holds) is not every node's. A server socket (an inbox, an internal PUB,
the supervisor's control, netsim and admin sockets) takes only clients whose public key is in
public.json, and some fewer (`only`). The client-facing sockets are plain unless the gateway's
`client_curve` is on (then its ROUTER serves CURVE to any client key); clients are authenticated
by their signed requests either way.

`[supervisor] curve = false` in the topology turns it off (a measurement of its price: make bench
reports the ratio).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import zmq
from zmq.utils import z85

CURVE_DIR = "curve"  # public.json (every role's public key) and ROLE.secret (0600) per role
GATEWAY_PUBLIC = "gateway.pub"  # the gateway's public key, for clients (client_curve)
CLIENTS_DOMAIN = b"clients"  # the ZAP domain of the gateway's client ROUTER: any client key
ONLY = b"only:"  # a ZAP domain "only:ROLE,ROLE": a socket that lets in those roles' keys alone
TOOLS = "tools"  # the CLI's, the chaos runner's and the tests' own key
ZAP_ENDPOINT = "inproc://zeromq.zap.01"


def keyring_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CURVE_DIR


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def create_keyring(run_dir: str | os.PathLike, names: list[str]) -> dict[str, str]:
    """A fresh keypair for each of `names` (and the tools): every public key in one file, each
    secret in its own 0600 file, so that a process (or an operator given the tools' key) holds
    one role's secret and not the others'. Returns the public keys."""
    folder = keyring_dir(run_dir)
    folder.mkdir(mode=0o700, exist_ok=True)
    publics = {}
    for name in [*names, TOOLS]:
        public, secret = zmq.curve_keypair()
        publics[name] = public.decode()
        _write(folder / f"{name}.secret", secret, 0o600)
    _write(folder / "public.json", json.dumps(publics).encode(), 0o644)
    return publics


def create_for(topo) -> None:
    """The keyring of a run of `topo` (its nodes and the supervisor), when CURVE is on; with
    `client_curve`, the gateway's public key beside it for clients (0644: it is public)."""
    if topo.supervisor.curve:
        made = create_keyring(topo.run_dir, [*topo.nodes, "supervisor"])
        gateway = topo.nodes.get("gateway")
        if gateway is not None and gateway.client_curve:
            _write(Path(topo.run_dir) / GATEWAY_PUBLIC, made["gateway"].encode() + b"\n", 0o644)


def publics(topo) -> dict[str, str]:
    """Every role's public key (z85): public, so anyone may read them."""
    return json.loads((keyring_dir(topo.run_dir) / "public.json").read_text())


def client_server_key(topo) -> bytes | None:
    """The gateway's public CURVE key (z85) when its client endpoint requires CurveZMQ, else
    None: what a client passes as `Client(server_key=...)` (read from RUN_DIR/gateway.pub)."""
    gateway = topo.nodes.get("gateway")
    if gateway is None or not gateway.client_curve or not topo.supervisor.curve:
        return None
    return (Path(topo.run_dir) / GATEWAY_PUBLIC).read_bytes().strip()


class Keyring:
    """One role's CURVE keys (its secret, and every role's public key), and which endpoints are
    internal (whose server is which role)."""

    def __init__(self, me: str, secret: bytes, publics: dict[str, str],
                 servers: dict[str, str]) -> None:
        self.me = me
        self.secret = secret
        self.publics = publics
        self.servers = servers  # endpoint -> the role whose key serves it
        # public key -> the role holding it: the ZAP handler names it as the connection's User-Id,
        # which every frame from that connection carries (what an inbox checks senders by)
        self.role_of = {z85.decode(k.encode()): name for name, k in publics.items()}

    def server(self, sock: zmq.Socket, clients: bool = False,
               only: tuple[str, ...] = ()) -> None:
        """Before bind: serve CURVE with this role's key (clients checked by the ZAP handler).
        With `clients` (the gateway's client ROUTER), any client key is let in: clients are
        authenticated by their signed requests, CURVE encrypts what they say. With `only`, the
        keys of those roles alone (a core's replication socket: its other instance)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.publics[self.me].encode()
        sock.curve_server = True
        if clients:
            sock.zap_domain = CLIENTS_DOMAIN
        elif only:
            sock.zap_domain = ONLY + ",".join(only).encode()

    def client(self, sock: zmq.Socket, endpoint: str) -> bool:
        """Before connect: CURVE to `endpoint`'s server when it is internal; False when it is
        not (a client-facing endpoint, plain)."""
        role = self.servers.get(endpoint)
        if role is None:
            return False
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.publics[self.me].encode()
        sock.curve_serverkey = self.publics[role].encode()
        return True


def internal_endpoints(topo) -> dict[str, str]:
    """Every internal endpoint and the role that binds it. The gateway's market data PUB and the
    client sockets are not here: they face clients."""
    out: dict[str, str] = {}
    for name, node in topo.nodes.items():
        if getattr(node, "inbox", ""):
            out[node.inbox] = name
        if getattr(node, "pub", "") and name != "gateway":
            out[node.pub] = name
        if getattr(node, "private", ""):
            out[node.private] = name
        for key in ("repl", "standby_inbox", "standby_pub", "standby_repl", "standby_private"):
            if getattr(node, key, ""):
                out[getattr(node, key)] = name  # a standby serves with its node's key
    sup = topo.supervisor
    for endpoint in (sup.control, sup.netsim, sup.admin):
        if endpoint:
            out[endpoint] = "supervisor"
    return out


def load(topo, me: str) -> Keyring | None:
    """Role `me`'s keyring for the run, or None when the topology turns CURVE off. A missing or
    unreadable file with CURVE on is an error: internal links never fall back to plain."""
    if not topo.supervisor.curve:
        return None
    secret = (keyring_dir(topo.run_dir) / f"{me}.secret").read_bytes()
    return Keyring(me, secret, publics(topo), internal_endpoints(topo))


class ZapHandler:
    """Answers libzmq's authentication requests for a context's CURVE servers: only the cluster's
    own public keys get in. Bound before any server socket, so no handshake happens unchecked
    (requests wait in its queue until the owner's loop reads them)."""

    def __init__(self, ctx: zmq.Context, keyring: Keyring, log, stats: dict | None = None) -> None:
        """`log`: the owner's logger; `stats`: its counters (a node's go out in its heartbeats),
        where `curve_refused` is kept."""
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)
        self.keyring = keyring
        self.log = log
        self.stats = stats if stats is not None else {}
        self.refused = 0

    def answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6:
            return [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"bad request",
                    b"", b""]
        version, request_id, domain, address, _identity, mechanism, *credentials = request
        curve = version == b"1.0" and mechanism == b"CURVE" and len(credentials) == 1
        if domain == CLIENTS_DOMAIN:  # the client ROUTER: any key; its frames say "client"
            role = "client" if curve else None
        else:
            role = self.keyring.role_of.get(credentials[0]) if curve else None
            if role is not None and domain.startswith(ONLY) and \
                    role.encode() not in domain[len(ONLY):].split(b","):
                role = None  # a cluster key, but not one this socket takes
        ok = role is not None
        if not ok:
            self.refused += 1
            self.stats["curve_refused"] = self.refused
            # said, but a flood does not flood the log
            if self.refused <= 10 or self.refused % 1000 == 0:
                self.log.warning("curve_refused", address=address.decode(errors="replace"),
                                 mechanism=mechanism.decode(errors="replace"), count=self.refused)
            return [b"1.0", request_id, b"400", b"not one of the cluster's keys", b"", b""]
        return [b"1.0", request_id, b"200", b"OK", role.encode(), b""]

    async def serve(self) -> None:
        """On an asyncio context's loop: answer requests until cancelled."""
        while True:
            request = await self.sock.recv_multipart()
            await self.sock.send_multipart(self.answer(request))

    def close(self) -> None:
        self.sock.close(linger=0)


def tools_socket(ctx: zmq.Context, kind: int, topo, endpoint: str, role: str = TOOLS) -> zmq.Socket:
    """A socket for a tool (CLI, chaos runner, tests) connected to an internal endpoint with the
    tools' key, when the run has CURVE on. A test that plays a compromised node passes its `role`
    (the inbox then reads its frames as that node's: cluster/senders.py)."""
    sock = ctx.socket(kind)
    keyring = load(topo, role)
    if keyring is not None:
        keyring.client(sock, endpoint)
    sock.connect(endpoint)
    return sock


def push_to_inbox(topo, node: str, messages: list, role: str = TOOLS,
                  endpoint: str | None = None) -> None:
    """One frame of `messages` into `node`'s inbox (or `endpoint`, a standby's) with `role`'s key
    (a test's or a drill's feed shock); lingers up to 2 s so the frame leaves before the socket
    closes."""
    import msgspec

    sock = tools_socket(zmq.Context.instance(), zmq.PUSH, topo, endpoint or topo.nodes[node].inbox,
                        role)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.send(msgspec.msgpack.encode(messages))
    sock.close()
