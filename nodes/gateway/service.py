"""Gateway node shell: the client ROUTER (requests, answers, execution reports), the client PUB
(market data re-published as received, without decoding), and the inbox for risk's reports."""

from __future__ import annotations

import time

import msgspec

from cluster.audit import Explanation
from cluster.config import Topology
from cluster.protocol import (
    ClientRequest, Codec, Error, Notice, OrderRejected, Ping, Pong, Regime, Reply, Report, Routed,
)
from cluster.signing import KEY_FILE_CHECK_MS, KeyFileWatch, load_keys, topology_keys
from cluster.stats import LATENCY_BOUNDS_US, count, observe
from cluster.transport import NodeShell
from nodes.gateway.invalid import describe_invalid, readable_req_ids
from nodes.gateway.key_admin import manage_key
from nodes.gateway.sessions import Gateway, LogonPolicy

ROUTER = "clients"
SESSION_IDLE_NS = 600 * 1_000_000_000  # a session silent for 10 minutes is forgotten
# A client frame is one request or a batch: beyond MAX_CLIENT_FRAME it is refused undecoded (a
# batch that size holds ~1,000 orders), and beyond MAX_CLIENT_MESSAGE libzmq drops the connection
# before the gateway ever holds it in memory.
MAX_CLIENT_FRAME = 64 * 1024
MAX_CLIENT_MESSAGE = 1024 * 1024
THROTTLES = frozenset({"rate_limited", "banned", "logon_delayed", "logon_locked_out"})
THROTTLE_JOURNAL_NS = 1_000_000_000
MAX_TIMED_REFS = 100_000  # requests in flight whose latency is measured (the oldest go first)


def build(shell: NodeShell, topo: Topology):
    # Refs start at the wall clock in ns: a restart begins past every ref its predecessor used
    # (that would take a billion requests a second), so late answers cannot be misdelivered.
    gateway = Gateway(topology_keys(topo),
                      {name: spec.public() for name, spec in topo.symbols.items()},
                      first_ref=time.time_ns(), collateral=(topo.collateral, str(topo.atom)),
                      policy=LogonPolicy.from_conf(shell.conf), limits=shell.conf.rate_limits,
                      keys=load_keys(topo.run_dir), recv_window_ms=shell.conf.recv_window_ms,
                      started_ms=time.time_ns() // 1_000_000)
    client_codec = Codec(ClientRequest)
    shell.peer("risk")
    shell.peer("matching")
    stats = shell.stats
    stats["client_rejects"] = 0
    stats["throttles_unjournaled"] = 0

    # Latency by request type, from admission to the first answer carrying the request's ref
    # (risk's or matching's), for /metrics: ref -> (request type, admitted at, mono ns).
    in_flight: dict[int, tuple[str, int]] = {}

    def apply(effects: list[tuple], requester: bytes | None = None) -> None:
        """Send what the core decided; its own refusals of `requester`'s request are journaled
        (refusals relayed from risk were journaled there)."""
        for effect in effects:
            if effect[0] == "client":
                if requester is not None and type(effect[2]) is Error:
                    explain_refusal(requester, effect[2])
                shell.reply(ROUTER, effect[1], effect[2])
            elif effect[0] == "explain":
                shell.audit.record(effect[1])
            elif effect[0] == "keys":  # an admin's ManageKey: the key file, written here
                manage(*effect[1:])
            else:
                if type(effect[1]) is Routed:
                    if len(in_flight) >= MAX_TIMED_REFS:  # answers that never came
                        del in_flight[next(iter(in_flight))]
                    in_flight[effect[1].ref] = (type(effect[1].body).__name__, shell.mono_ns())
                shell.send(effect[0], effect[1])

    def answered(msg) -> None:
        """A request's answer from risk or matching: its latency, and a refusal by reason."""
        t = type(msg)
        ref = msg.ref
        if t is Reply and type(msg.body) is Error:
            count(stats, "rejects", msg.body.reason)
        elif t is Report and type(msg.event) is OrderRejected:
            count(stats, "rejects", msg.event.reason)
        timed = in_flight.pop(ref, None) if ref else None
        if timed is not None:
            observe(stats, "request_latency_us", timed[0], (shell.mono_ns() - timed[1]) // 1000,
                    LATENCY_BOUNDS_US)

    throttles_journaled: dict[tuple[str, str], int] = {}  # (subject, reason) -> when, mono ns

    def explain_refusal(identity: bytes, error: Error) -> None:
        """Every refusal the gateway itself decides: counted, and journaled under the session's
        account (or, before logon, its identity) with the numbers the client was sent. A flood's
        throttles are journaled once a second per subject and reason (the rest counted), so
        that refusing a flood never costs a disk write per frame."""
        stats["client_rejects"] += 1
        count(stats, "rejects", error.reason)
        session = gateway.sessions.get(identity)
        subject = session.account if session is not None else identity.hex()
        if error.reason in THROTTLES:
            rule = error.detail.get("rule") or error.reason  # a bucket's rule; a ban; logon pacing
            count(stats, "throttles", str(rule))
            now = shell.mono_ns()
            if now - throttles_journaled.get((subject, error.reason), -THROTTLE_JOURNAL_NS) \
                    < THROTTLE_JOURNAL_NS:
                stats["throttles_unjournaled"] += 1
                return
            if len(throttles_journaled) >= 100_000:
                throttles_journaled.clear()
            throttles_journaled[(subject, error.reason)] = now
        shell.audit.record(Explanation(
            ts_ns=shell.now_ns(), node="gateway", rule=f"gateway.{error.reason}",
            subject=subject, decision="reject",
            numbers={"req_id": error.req_id, **error.detail}))

    def refuse(identity: bytes, reason: str, error: str, req_id: int = 0) -> None:
        """A frame refused before the core saw it (malformed, invalid, too large) or a core bug."""
        refusal = Error(req_id=req_id, reason=reason, detail={"error": error[:200]})
        explain_refusal(identity, refusal)
        shell.reply(ROUTER, identity, refusal)

    peers = shell.router_peers

    def on_client(frames: list) -> None:
        now = shell.mono_ns()
        gateway.wall_offset_ns = shell.now_ns() - now
        for parts in frames:
            identity = parts[0]
            peer = peers.get(identity)
            ip = peer[0] if peer is not None else ""
            if len(parts) != 2:
                refuse(identity, "malformed_message", f"expected 1 payload frame, got {len(parts) - 1}")
                continue
            if len(parts[1]) > MAX_CLIENT_FRAME:
                refuse(identity, "frame_too_large",
                       f"{len(parts[1])} bytes; the limit is {MAX_CLIENT_FRAME} (send smaller batches)")
                continue
            try:
                requests = client_codec.decode_request(parts[1])
            except msgspec.ValidationError as exc:
                try:  # read leniently from hostile bytes: a failure here must not cost the batch
                    error, req_ids = describe_invalid(parts[1], exc), readable_req_ids(parts[1])
                except Exception:
                    error, req_ids = str(exc), []
                for req_id in req_ids or [0]:  # answer what can be correlated
                    refuse(identity, "invalid_message", error, req_id)
                continue
            except msgspec.DecodeError as exc:
                refuse(identity, "malformed_message", str(exc))
                continue
            if not requests:
                refuse(identity, "invalid_message", "empty batch")
                continue
            for req in requests:
                if type(req) is Ping:  # the trace starts here: hops a client sent are dropped
                    req = Ping(req_id=req.req_id, hops=[("gateway", shell.mono_ns())],
                               full=req.full)
                try:
                    effects = gateway.on_request(identity, req, now, ip)
                except Exception as exc:  # a bug: answer this request, keep serving the rest
                    shell.failed("message_failed", type(req).__name__, exc)
                    refuse(identity, "internal_error", type(exc).__name__,
                           getattr(req, "req_id", 0))
                    continue
                apply(effects, identity)

    def on_internal(messages: list) -> None:
        for msg in messages:
            if type(msg) is Notice:
                shell.publish(b"notice." + msg.subject.encode(), msg)
                continue
            if type(msg) is Reply and type(msg.body) is Pong:
                msg = Reply(ref=msg.ref, body=Pong(
                    req_id=msg.body.req_id, hops=msg.body.hops + [("gateway", shell.mono_ns())]))
            if type(msg) is Reply or type(msg) is Report:
                answered(msg)
            try:
                effects = gateway.on_internal(msg)
            except Exception as exc:  # a bug: log it, keep serving the rest of the batch
                shell.failed("message_failed", type(msg).__name__, exc)
                continue
            apply(effects)

    def on_regime(messages: list) -> None:
        now = shell.mono_ns()
        gateway.wall_offset_ns = shell.now_ns() - now
        for msg in messages:
            if type(msg) is Regime:
                apply(gateway.on_regime(msg, now))

    def forward(frames: list) -> None:
        for parts in frames:
            shell.publish_raw(parts)

    def expire() -> None:
        gone = gateway.expire(shell.mono_ns(), SESSION_IDLE_NS)
        if gone:
            shell.log.info("sessions_expired", count=len(gone), sessions=len(gateway.sessions))

    def gone(identity: bytes) -> None:
        account = gateway.disconnected(identity)
        if account is not None:
            stats["sessions_disconnected"] += 1
            shell.log.info("session_disconnected", account=account, sessions=len(gateway.sessions))

    key_file_watch = KeyFileWatch(topo.run_dir)
    account_names = frozenset(topo.accounts)
    topology_key_accounts = {k: account for k, (account, _) in gateway.topology_keys.items()}

    def manage(identity: bytes, msg, by: str, usage: dict) -> None:
        """`perpx keys` over the wire (nodes/gateway/key_admin.py); served by at once."""
        try:
            answer, numbers = manage_key(topo.run_dir, account_names, topology_key_accounts,
                                         msg, by)
        except (OSError, ValueError) as exc:  # the key file unreadable or unwritable
            answer, numbers = Error(req_id=msg.req_id, reason="key_file_error",
                                    detail={"error": str(exc)[:200]}), None
        answer = msgspec.structs.replace(answer, usage=usage)
        if numbers is None:
            explain_refusal(identity, answer)
        else:
            shell.audit.record(Explanation(ts_ns=shell.now_ns(), node="gateway",
                                           rule=f"gateway.{answer.action}",
                                           subject=numbers["account"], decision="applied",
                                           numbers=numbers))
            reload_keys()
        shell.reply(ROUTER, identity, answer)

    def reload_keys() -> None:
        """The key file changed (a key made, revoked or rotated): serve by it from now on; a file
        that does not read leaves the keys as they were."""
        if not key_file_watch.changed():
            return
        try:
            keys = load_keys(topo.run_dir)
        except (OSError, ValueError) as exc:
            shell.log.error("key_file_unreadable", error=str(exc)[:300])
            return
        changed = gateway.set_keys(keys)
        shell.log.info("keys_reloaded", keys=len(keys), sessions_changed=changed)

    stats["sessions_disconnected"] = 0
    shell.every(KEY_FILE_CHECK_MS, reload_keys)
    shell.every(10_000, expire)
    shell.bind_router(ROUTER, shell.conf.client, on_client, on_gone=gone,
                      max_message=MAX_CLIENT_MESSAGE, track_peers=True,
                      curve_clients=shell.conf.client_curve)
    shell.bind_pub(shell.conf.pub)
    shell.bind_inbox(on_internal)
    shell.subscribe(topo.nodes["matching"].pub, [b""], None, raw=forward)
    shell.subscribe(topo.nodes["oracle"].pub, [b""], None, raw=forward)
    shell.subscribe(topo.nodes["oracle"].pub, [b"regime."], on_regime)  # limits that tighten
    return None
