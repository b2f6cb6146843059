"""The supervisor: starts every node as its own OS process, waits for each one's readiness handshake,
watches process exits and heartbeats, applies the failure policy, and stops everything cleanly.

Failure policy, per node in the topology (`on_failure`):
- "restart": the node is restarted (at most `max_restarts` within `restart_window_s`, then the
  whole cluster stops);
- "stop_all": the whole cluster stops (risk and matching: their state would be lost until journal
  replay and a hot standby exist).
A node is found dead by polling its process every 100 ms (so a SIGKILL is noticed well within 1 s);
a live node whose heartbeats stop for `heartbeat_timeout_ms` is reported unresponsive (a short pause
is not a crash: it is reported, and reported again when it recovers); one silent for
`hung_after_ms` is hung: the supervisor kills it (SIGKILL, so a process that is stopped cannot wake
and act on what it held) and its failure policy applies as to a crash.

Files under the run directory: log/<node>.log (structlog JSON), log/<node>.out (stdout/stderr),
pid/<node>.pid, supervisor.pid, status.json (rewritten every 250 ms), run/ (ipc sockets, removed
at stop), audit/ (explanation journals).
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import msgspec
import zmq
import zmq.asyncio

from cluster import curve
from cluster.signing import ensure_forwarder_key, ensure_key_file
from cluster.audit import AuditJournal, Explanation
from cluster.failover import FENCED_EXIT
from cluster.config import Topology, node_names
from cluster.logs import configure
from cluster.runstate import status_path
from cluster.protocol import (
    AdminReply, AdminRequest, Codec, ControlMsg, FeedControl, Heartbeat, NetsimTable, Ready,
    encode_one, field_at,
)
from netsim.control import ControlError, NetsimState

POLL_S = 0.1


def encode_one_batch(message) -> bytes:
    """Nodes read frames as batches (msgpack arrays of messages)."""
    return msgspec.msgpack.encode([message])
STATUS_S = 0.25
STOP_GRACE_S = 5.0


class Adopted:
    """A node process a restarted supervisor found running (not its child): the few Popen
    methods the supervisor uses, by pid. Its exit status is not ours to read: -9 stands for it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not process_alive(self.pid):
            self.returncode = -signal.SIGKILL
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = time.monotonic() + (timeout or 5.0)
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.returncode


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except (ProcessLookupError, OSError):
        return False


def running_instance(run: Path, instance: str) -> int | None:
    """The pid of `instance`'s node process of this run, if its pid file names one that runs
    (checked by its command line, so a reused pid is not taken for it)."""
    try:
        pid = int((run / "pid" / f"{instance}.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    args = [a.decode(errors="replace") for a in cmdline]
    if "cluster.node" in args and instance in args and str(run) in args and process_alive(pid):
        return pid
    return None


class NodeProc:
    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen | Adopted | None = None
        self.ready = False
        self.last_beat = 0.0
        self.beats = 0
        self.restarts: deque[float] = deque()
        self.paused = False  # stopped on purpose by a netsim fault
        self.state = "starting"
        self.stats: dict[str, int] = {}
        self.exit_code: int | None = None


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a node's output (a traceback's last line says what failed)."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:limit] if lines else ""


class Supervisor:
    def __init__(self, topo: Topology, echo=None, resume: bool = False, adopt: bool = False) -> None:
        self.topo = topo
        self.resume = resume or adopt  # keep the journals of an earlier run: risk and matching replay them
        # A supervisor that died left its nodes serving: take over the ones still running
        # (from their pid files, then their heartbeats) instead of starting a second set.
        self.adopt = adopt
        self.run = Path(topo.run_dir)
        # one process per node, two for a core with a standby ("<node>.b": cluster/failover.py)
        self.nodes = {instance: NodeProc(instance) for name in node_names(topo)
                      for instance in topo.instances(name)}
        self.log = configure("supervisor", topo.log_dir)
        self.echo = echo or (lambda text: print(text, file=sys.stderr, flush=True))
        self.events: list[dict] = []
        self.state = "starting"
        self.failure: str | None = None
        self._stopping = asyncio.Event()
        self._ctx = zmq.asyncio.Context()
        self._control = None
        self._netsim_pub = None
        self._admin = None
        self._feeds = None
        self._zap: curve.ZapHandler | None = None
        self.forged_beats = 0  # control messages refused: not from the node they name
        # venue -> action -> (the fault, when it ends on the monotonic clock, or None: until healed)
        self._feed_faults: dict[str, dict[str, tuple[FeedControl, float | None]]] = {}
        self._tasks: list[asyncio.Task] = []
        self.netsim = NetsimState()
        self.audit = AuditJournal(str(self.run / "audit" / "supervisor.jsonl"))

    # ------------------------------------------------------------------ files

    def _prepare_dirs(self) -> None:
        if not self.resume:
            shutil.rmtree(self.run / "journal", ignore_errors=True)
        for sub in ("log", "pid", "run", "audit", "journal"):
            (self.run / sub).mkdir(parents=True, exist_ok=True)
        # the API keys' secrets (0600), never in the topology: the gateway, SDK and CLI read them
        ensure_key_file(self.run, [a.api_key for a in self.topo.accounts.values()])
        if "rest" in self.topo.nodes:
            ensure_forwarder_key(self.run)  # the facade's forwarding key (#25)
        if self.adopt:  # the running nodes hold the run's keys and sockets: keep them, but
            sup = self.topo.supervisor  # the dead supervisor's own ipc files are ours to bind
            for endpoint in (sup.control, sup.netsim, sup.admin):
                if endpoint.startswith("ipc://"):
                    Path(endpoint[len("ipc://"):]).unlink(missing_ok=True)
            (self.run / "supervisor.pid").write_text(str(os.getpid()))
            return
        curve.create_for(self.topo)  # the internal links' keys, afresh for this run
        copy = self.run / "journal" / "topology.toml"  # what `perpx audit verify` replays with
        if not (self.resume and copy.exists()):
            shutil.copyfile(self.topo.path, copy)
        self._clean_sockets()
        (self.run / "supervisor.pid").write_text(str(os.getpid()))

    def _clean_sockets(self) -> None:
        for path in glob.glob(str(self.run / "run" / "*")):
            try:
                os.unlink(path)
            except OSError:
                pass

    def write_status(self) -> None:
        now = time.monotonic()
        status = {
            "cluster": self.topo.name, "state": self.state, "supervisor_pid": os.getpid(),
            "config": self.topo.path, "run_dir": str(self.run), "failure": self.failure,
            "client_endpoint": self.topo.nodes["gateway"].client,
            "market_data_endpoint": self.topo.nodes["gateway"].pub,
            "nodes": {
                n.name: {
                    "pid": n.proc.pid if n.proc else None, "state": n.state, "ready": n.ready,
                    "heartbeat_age_ms": int((now - n.last_beat) * 1000) if n.last_beat else None,
                    "restarts": len(n.restarts), "exit_code": n.exit_code, "stats": n.stats,
                    **self._role(n),
                } for n in self.nodes.values()
            },
            "events": self.events[-20:],
        }
        tmp = status_path(self.run).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(status, indent=1))
        os.replace(tmp, status_path(self.run))

    def _role(self, n: NodeProc) -> dict:
        """A core instance's failover role as its heartbeats say (cluster/failover.py)."""
        if n.name.partition(".")[0] not in self.topo.nodes or \
                not self.topo.nodes[n.name.partition(".")[0]].standby:
            return {}
        stats = n.stats or {}
        role = "primary" if stats.get("role_primary") else "standby"
        if n.state not in ("running", "starting", "unresponsive"):
            role = "down"
        elif role == "primary":  # a paused old primary still says so: the higher epoch is it
            for rival in (self.nodes[i] for i in self.topo.instances(n.name.partition(".")[0])
                          if i != n.name):
                theirs = rival.stats or {}
                if theirs.get("role_primary") and rival.state in ("running", "unresponsive") \
                        and theirs.get("epoch", 0) > stats.get("epoch", 0):
                    role = "superseded"
        return {"role": role, "epoch": stats.get("epoch", 0),
                "in_sync": bool(stats.get("standby_in_sync", 0)),
                "standby_lag_inputs": stats.get("standby_lag_inputs", 0),
                "standby_lag_ms": stats.get("standby_lag_ms", 0)}

    def primary_of(self, node: str) -> str:
        """The instance of core `node` that heartbeats say is primary (the highest epoch)."""
        best = None
        for instance in self.topo.instances(node):
            proc = self.nodes[instance]
            stats = proc.stats or {}
            if stats.get("role_primary") and proc.state in ("running", "unresponsive") and (
                    best is None or stats.get("epoch", 0) > best[0]):
                best = (stats.get("epoch", 0), instance)
        if best is None:
            raise ControlError(f"no instance of {node} says it is primary")
        return best[1]

    def _event(self, kind: str, node: str, **info) -> None:
        record = {"wall_ns": time.time_ns(), "mono_ns": time.monotonic_ns(), "event": kind,
                  "node": node, **info}
        self.events.append(record)
        self.log.warning(kind, node=node, **info)

    # ------------------------------------------------------------------ processes

    def _spawn(self, node: NodeProc, restarted: bool = False) -> None:
        out = open(self.run / "log" / f"{node.name}.out", "ab")  # noqa: SIM115
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.node", node.name, "--config", self.topo.path,
             "--run-dir", str(self.run)] + (["--restarted"] if restarted else []),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Its own process group: a terminal's Ctrl-C (SIGINT to the foreground group) reaches
            # the supervisor alone, which stops the demo (its summary asks the nodes) and then
            # the nodes, in order. They still die with the supervisor (PDEATHSIG).
            process_group=0,
        )
        out.close()
        node.ready = False
        node.state = "starting"
        node.paused = False  # a new process: whatever stopped the old one did not stop it
        node.exit_code = None
        node.last_beat = 0.0
        (self.run / "pid" / f"{node.name}.pid").write_text(str(node.proc.pid))

    async def _control_loop(self) -> None:
        codec = Codec(ControlMsg)
        authenticated = self._zap is not None
        while True:
            frame = await self._control.recv(copy=False)
            try:
                msg = codec.decode_one(frame.bytes)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            # a node's heartbeat only from that node's key: the tools' could keep a hung node
            # looking alive (its pid is in the run directory), or end one's adoption
            if authenticated and frame.get("User-Id") != msg.node.partition(".")[0]:
                self.forged_beats += 1
                if self.forged_beats <= 10:
                    self.log.warning("control_sender_refused", node=msg.node,
                                     sender=frame.get("User-Id"), count=self.forged_beats)
                continue
            node = self.nodes.get(msg.node)
            if node is None or node.proc is None or msg.pid != node.proc.pid:
                continue  # a message from a previous incarnation
            now = time.monotonic()
            if type(msg) is Ready:
                node.ready = True
                node.state = "running"
                node.last_beat = now
            elif type(msg) is Heartbeat:
                if not node.ready and isinstance(node.proc, Adopted):
                    node.ready = True  # an adopted node: its heartbeat is its Ready
                    node.state = "running"
                if node.state == "unresponsive":
                    self._event("node_responsive_again", node.name)
                    self.echo(f"supervisor: {node.name} is responsive again")
                    node.state = "running"
                node.last_beat = now
                node.beats += 1
                node.stats = msg.stats

    # ------------------------------------------------------------------ netsim and faults

    def _publish_netsim(self) -> None:
        if self._netsim_pub is None:
            return
        table = NetsimTable(**self.netsim.table())
        try:
            self._netsim_pub.send(encode_one_batch(table), zmq.NOBLOCK)
        except zmq.Again:
            pass

    async def _netsim_loop(self) -> None:
        while True:  # republished, so nodes that (re)start late catch up
            self._publish_netsim()
            await asyncio.sleep(0.5)

    async def _admin_loop(self) -> None:
        codec = Codec(AdminRequest)
        while True:
            parts = await self._admin.recv_multipart()
            identity, frame = parts[0], parts[-1]
            try:
                req = codec.decode_one(frame)
                reply = AdminReply(ok=True, data=self._admin_command(req.cmd, req.args))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                reply = AdminReply(ok=False, error=f"bad request: {exc}")
            except ControlError as exc:
                reply = AdminReply(ok=False, error=str(exc))
            except Exception as exc:  # arguments of the wrong shape: refuse, keep serving
                reply = AdminReply(ok=False, error=f"bad arguments: {type(exc).__name__}: {exc}")
            await self._admin.send_multipart([identity, encode_one(reply)])

    def _applied(self, action: str, subject: str, numbers: dict) -> None:
        """Every applied change, with wall and monotonic time, so reports can line them up."""
        # the subject is the event's node; a "node" among the numbers would name it twice
        self._event(f"netsim_{action}", subject, **{k: v for k, v in numbers.items()
                                                     if isinstance(v, (int, str, float, bool))
                                                     and k not in ("kind", "node")})
        self.audit.record(Explanation(ts_ns=time.time_ns(), node="supervisor",
                                      rule=f"netsim.{action}", subject=subject, decision="applied",
                                      numbers={"mono_ns": time.monotonic_ns(),
                                               **{k: str(v) for k, v in numbers.items()}}))
        self.audit.flush()

    def _admin_command(self, cmd: str, args: dict) -> dict:
        if cmd == "status":
            return {"state": self.state, "nodes": {n.name: n.state for n in self.nodes.values()}}
        if cmd == "fault":
            node = args.get("node", "")
            if args.get("primary") or args.get("standby"):
                if node not in self.topo.nodes or not self.topo.nodes[node].standby:
                    raise ControlError(f"{node!r} has no standby: --primary/--standby name a "
                                       "core instance (risk, matching with standby = true)")
                primary = self.primary_of(node)
                node = primary if args.get("primary") else next(
                    i for i in self.topo.instances(node) if i != primary)
            result = self._fault(node, args.get("op", ""))
            seconds = args.get("seconds")
            if seconds and args.get("op") == "pause":
                pid = result["pid"]
                asyncio.get_running_loop().call_later(float(seconds), self._resume, node, pid)
                result["resume_after_s"] = seconds
            return result
        if cmd == "feed":
            try:  # array-like wire structs: build, then validate by a round trip
                control = msgspec.msgpack.decode(msgspec.msgpack.encode(FeedControl(**args)),
                                                 type=FeedControl)
            except (TypeError, msgspec.ValidationError) as exc:
                where = re.search(r"`\$\[(\d+)\]`", str(exc))
                named = field_at(FeedControl, int(where.group(1))) if where else None
                raise ControlError(f"bad feed fault: {exc}" + (f" ({named})" if named else "")) \
                    from None
            self._check_feed_target(control)
            self._feeds.send(encode_one_batch(control), zmq.NOBLOCK)
            self._remember_feed_fault(control)
            self._applied(f"feed_{control.action}", control.venue or control.symbol, args)
            return {"sent": args}
        table = self.netsim.handle(cmd, args)
        if cmd != "netsim_show":
            self._applied(cmd.removeprefix("netsim_"), args.get("link") or args.get("name")
                          or args.get("node") or "all", args)
            self._publish_netsim()
        return table

    def _remember_feed_fault(self, control: FeedControl) -> None:
        """The venue faults in force, so that a restarted feeds process gets them again (a shock
        is a one-off move of the price, which the restarted walk resumes from)."""
        if control.action == "shock":
            return
        if control.action == "heal":
            for venue in ([control.venue] if control.venue else list(self._feed_faults)):
                self._feed_faults.pop(venue, None)
            return
        until = time.monotonic() + control.duration_ms / 1000 if control.duration_ms and \
            control.action in ("freeze", "spike") else None
        self._feed_faults.setdefault(control.venue, {})[control.action] = (control, until)

    def _resend_feed_faults(self) -> None:
        now = time.monotonic()
        for venue, faults in self._feed_faults.items():
            for action, (control, until) in list(faults.items()):
                if until is not None and until <= now:
                    del faults[action]  # over while the feeds process was down
                    continue
                if until is not None:
                    control = msgspec.structs.replace(control,
                                                      duration_ms=max(1, int((until - now) * 1000)))
                self._feeds.send(encode_one_batch(control), zmq.NOBLOCK)
                self._event("feed_fault_resent", "feeds", venue=venue, action=action,
                            duration_ms=control.duration_ms)

    def _check_feed_target(self, control: FeedControl) -> None:
        """The feeds process ignores a venue or symbol it does not have: refuse it here, by name."""
        venues = self.topo.nodes["feeds"].venues
        if control.action == "shock":
            if control.symbol not in self.topo.symbols:
                raise ControlError(f"shock needs a symbol: {control.symbol!r} is not one of "
                                   f"{', '.join(sorted(self.topo.symbols))}")
        elif control.venue and control.venue not in venues:
            raise ControlError(f"unknown venue {control.venue!r}; venues: {', '.join(venues)}")
        elif not control.venue and control.action != "heal":
            raise ControlError(f"{control.action} needs a venue: one of {', '.join(venues)}")

    def _fault(self, node_name: str, op: str) -> dict:
        node = self.nodes.get(node_name)
        if node is None or node.proc is None:
            raise ControlError(f"unknown node {node_name!r}")
        sig = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "resume": signal.SIGCONT}.get(op)
        if sig is None:
            raise ControlError(f"unknown fault {op!r}: kill, pause or resume")
        pid = node.proc.pid
        os.kill(pid, sig)
        if op == "pause":
            node.paused = True
        elif op == "resume":
            node.paused = False
        self._applied(f"fault_{op}", node_name, {"pid": pid})
        return {"node": node_name, "op": op, "pid": pid}

    def _resume(self, instance: str, pid: int) -> None:
        """The end of a timed pause: the same process (a restarted one was never paused)."""
        node = self.nodes.get(instance)
        if node is None or node.proc is None or node.proc.pid != pid or node.proc.poll() is not None:
            return
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            return
        node.paused = False
        self._applied("fault_resume", instance, {"pid": pid, "timed": 1})

    async def start(self) -> None:
        self._prepare_dirs()
        keyring = curve.load(self.topo, "supervisor")
        if keyring is not None:  # before any server socket: no handshake goes unchecked
            self._zap = curve.ZapHandler(self._ctx, keyring, self.log)
            self._tasks.append(asyncio.create_task(self._zap.serve()))

        def serve(sock, only: tuple[str, ...] = ()) -> None:
            if keyring is not None:
                keyring.server(sock, only=only)

        self._control = self._ctx.socket(zmq.PULL)
        self._control.setsockopt(zmq.LINGER, 0)
        serve(self._control)
        self._control.bind(self.topo.supervisor.control)
        self._control_task = asyncio.create_task(self._control_loop())
        if self.topo.supervisor.netsim:
            self._netsim_pub = self._ctx.socket(zmq.PUB)
            self._netsim_pub.setsockopt(zmq.LINGER, 0)
            serve(self._netsim_pub)
            self._netsim_pub.bind(self.topo.supervisor.netsim)
            self._tasks.append(asyncio.create_task(self._netsim_loop()))
        if self.topo.supervisor.admin:
            self._admin = self._ctx.socket(zmq.ROUTER)
            self._admin.setsockopt(zmq.LINGER, 0)
            serve(self._admin, only=(curve.TOOLS,))  # the operators' tools, not a node's key
            self._admin.bind(self.topo.supervisor.admin)
            self._feeds = self._ctx.socket(zmq.PUSH)
            self._feeds.setsockopt(zmq.LINGER, 0)
            self._feeds.setsockopt(zmq.SNDHWM, 100)
            if keyring is not None:
                keyring.client(self._feeds, self.topo.nodes["feeds"].inbox)
            self._feeds.connect(self.topo.nodes["feeds"].inbox)
            self._tasks.append(asyncio.create_task(self._admin_loop()))
        adopted = {}
        for node in self.nodes.values():
            pid = running_instance(self.run, node.name) if self.adopt else None
            if pid is not None:
                node.proc = Adopted(pid)
                node.state = "adopting"  # ready at its first heartbeat to us
                adopted[node.name] = pid
            else:
                self._spawn(node)
        if self.adopt:
            self._event("nodes_adopted", "supervisor", adopted=adopted,
                        started=[n for n in self.nodes if n not in adopted])
            self.echo(f"supervisor: adopted {len(adopted)} running nodes"
                      + (f", started {len(self.nodes) - len(adopted)}"
                         if len(adopted) < len(self.nodes) else ""))
        deadline = time.monotonic() + self.topo.supervisor.ready_timeout_ms / 1000
        while not all(n.ready for n in self.nodes.values()):
            for n in self.nodes.values():
                if n.proc.poll() is not None:
                    why = last_line(self.run / "log" / f"{n.name}.out")
                    self.failure = (f"{n.name} exited with {n.proc.returncode} during start-up"
                                    + (f": {why}" if why else ""))
                    raise RuntimeError(self.failure + f" (see {self.run}/log/{n.name}.out)")
            if time.monotonic() > deadline:
                missing = [n.name for n in self.nodes.values() if not n.ready]
                self.failure = f"not ready in time: {', '.join(missing)}"
                raise RuntimeError(self.failure)
            await asyncio.sleep(0.05)
        self.state = "running"
        self._event("cluster_ready", "supervisor",
                    pids={n.name: n.proc.pid for n in self.nodes.values()})
        self.write_status()

    async def watch(self) -> None:
        """Poll processes and heartbeats until asked to stop or a failure stops the cluster."""
        timeout = self.topo.supervisor.heartbeat_timeout_ms / 1000
        hung_after = self.topo.supervisor.hung_after_ms / 1000
        last_status = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            for node in self.nodes.values():
                code = node.proc.poll()
                if code is not None:
                    self._on_exit(node, code)
                    if self._stopping.is_set():
                        break
                elif node.ready and node.state == "running" and now - node.last_beat > timeout:
                    node.state = "unresponsive"
                    age = int((now - node.last_beat) * 1000)
                    self._event("node_unresponsive", node.name, heartbeat_age_ms=age,
                                paused_by_netsim=node.paused)
                    self.echo(f"supervisor: {node.name} sent no heartbeat for {age} ms")
                elif hung_after and node.state == "unresponsive" and \
                        now - node.last_beat > hung_after:
                    self._kill_hung(node, int((now - node.last_beat) * 1000))
            if now - last_status >= STATUS_S:
                self.write_status()
                last_status = now
            try:
                await asyncio.wait_for(self._stopping.wait(), POLL_S)
            except asyncio.TimeoutError:
                pass

    def _kill_hung(self, node: NodeProc, age_ms: int) -> None:
        """A node silent past `hung_after_ms` is treated as dead: SIGKILL (a stopped process cannot
        catch it, and never wakes to emit what it held), then the exit is handled as a crash."""
        node.state = "hung"
        policy = self.topo.nodes[node.name.partition(".")[0]].on_failure
        self._event("node_hung", node.name, heartbeat_age_ms=age_ms,
                    hung_after_ms=self.topo.supervisor.hung_after_ms, action="kill",
                    paused_by_netsim=node.paused, policy=policy)
        self.echo(f"supervisor: {node.name} silent for {age_ms} ms "
                  f"(> hung_after_ms {self.topo.supervisor.hung_after_ms}): killing it; "
                  f"policy {policy}")
        try:
            node.proc.kill()
        except ProcessLookupError:
            pass

    def _on_exit(self, node: NodeProc, code: int) -> None:
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        node.exit_code = code
        node.state = "dead"
        policy = self.topo.nodes[node.name.partition(".")[0]].on_failure
        self._event("node_died", node.name, how=how, policy=policy)
        now = time.monotonic()
        if code == FENCED_EXIT:  # a superseded primary: it comes back as the standby, always
            self.echo(f"supervisor: {node.name} was fenced (a newer epoch is primary); "
                      "starting it again as the standby")
            self._spawn(node, restarted=True)
            self._event("node_restarted", node.name, pid=node.proc.pid, why="fenced")
            return
        window = self.topo.supervisor.restart_window_s
        while node.restarts and now - node.restarts[0] > window:
            node.restarts.popleft()
        if policy == "restart" and len(node.restarts) < self.topo.supervisor.max_restarts:
            node.restarts.append(now)
            self.echo(f"supervisor: {node.name} died ({how}); policy restart: restarting "
                      f"({len(node.restarts)}/{self.topo.supervisor.max_restarts} in {window}s)")
            self._spawn(node, restarted=True)
            self._event("node_restarted", node.name, pid=node.proc.pid)
            if node.name == "feeds" and self._feeds is not None:
                self._resend_feed_faults()  # queued until the new process binds its inbox
            return
        reason = "stop_all" if policy == "stop_all" else "restart limit reached"
        self.failure = f"{node.name} died ({how}); {reason}"
        self.echo(f"supervisor: {node.name} died ({how}); policy {reason}: stopping the cluster")
        self._stopping.set()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self.state = "stopping"
        self.write_status()
        procs = [n for n in reversed(list(self.nodes.values())) if n.proc and n.proc.poll() is None]
        for n in procs:
            try:
                n.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        while any(n.proc.poll() is None for n in procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for n in procs:
            if n.proc.poll() is None:
                self._event("node_killed_at_stop", n.name)
                n.proc.kill()
                n.proc.wait()
        for n in self.nodes.values():
            if n.proc is not None:
                n.exit_code = n.proc.poll()
                n.state = "stopped"
            try:
                (self.run / "pid" / f"{n.name}.pid").unlink()
            except FileNotFoundError:
                pass
        if getattr(self, "_control_task", None):
            self._control_task.cancel()
        for task in self._tasks:
            task.cancel()
        for sock in (self._control, self._netsim_pub, self._admin, self._feeds,
                     self._zap.sock if self._zap is not None else None):
            if sock is not None:
                sock.close(linger=0)
        self.audit.close()
        self._ctx.term()
        self._clean_sockets()
        self.state = "failed" if self.failure else "stopped"
        self.write_status()
        try:
            (self.run / "supervisor.pid").unlink()
        except FileNotFoundError:
            pass


async def run_cluster(topo: Topology, demo_seconds: float | None = None, demo: bool = False,
                      echo=None, resume: bool = False, adopt: bool = False) -> int:
    """Start, optionally drive demo traffic, watch until SIGINT/SIGTERM or failure, stop."""
    sup = Supervisor(topo, echo=echo, resume=resume, adopt=adopt)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # (a closed terminal: stop cleanly)
        loop.add_signal_handler(sig, sup.request_stop)
    demo_task = None
    try:
        await sup.start()
        sup.echo(f"perpx: cluster '{topo.name}' up: clients at {topo.nodes['gateway'].client}, "
                 f"market data at {topo.nodes['gateway'].pub}, run dir {topo.run_dir}")
        if demo:
            from cluster.demo import run_demo

            demo_task = asyncio.create_task(run_demo(topo, demo_seconds, sup.request_stop))
        elif demo_seconds:
            loop.call_later(demo_seconds, sup.request_stop)
        await sup.watch()
    except RuntimeError as exc:
        sup.echo(f"perpx: cluster failed to start: {exc}")
    finally:
        if demo_task is not None:
            demo_task.cancel()
            await asyncio.gather(demo_task, return_exceptions=True)
        await sup.stop()
    sup.echo(f"perpx: cluster stopped ({sup.failure or 'clean'})")
    return 1 if sup.failure else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m cluster.supervisor --config F [--run-dir D]`: the detached form of `cluster up`."""
    import argparse

    import uvloop

    from cluster import config

    parser = argparse.ArgumentParser(prog="perpx-supervisor")
    parser.add_argument("--config", default=None)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--adopt", action="store_true",
                        help="take over the nodes of this run that are still running")
    args = parser.parse_args(argv)
    topo = config.load(args.config, run_dir=args.run_dir)
    return uvloop.run(run_cluster(topo, resume=args.resume, adopt=args.adopt))


if __name__ == "__main__":
    sys.exit(main())
