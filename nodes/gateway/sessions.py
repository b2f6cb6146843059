"""Gateway core: client sessions, API-key logon, request routing. Pure (no sockets, no clock).

A session is a ROUTER identity. It logs on with an API key and is bound to one account. Requests are
wrapped as `Routed(ref, account, body)`; `ref` is the gateway's own number for the request, and the
first answer carrying it goes back to the requesting session with the client's `req_id`. Everything
else for an account (fills, cancels, triggers) goes to every session of that account.

`_admit` is where a request is refused before it leaves the gateway: API-key scopes are checked
there now; IP allow-lists and rate limits belong there too.

Before logon only Logon and a gateway-local Ping are served: a connection that never logged on can
make the gateway do no more than answer it. Sessions are capped per address and per key, and logons
that fail are paced per address (LogonPolicy): a node that floods wrong keys gets refusals that name
its attempts and when it may try again, without the key being looked at.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

import msgspec

from cluster.config import NodeConf
from cluster.audit import Explanation
from cluster.config import LimitsPolicy
from nodes.gateway.limits import REGIMES, Limiter

from cluster.protocol import (
    PROTOCOL_VERSION, Ack, AdjustIsolatedMargin, AmendOrder, CancelAll, CancelOrder, Deposit, Error,
    GetAccount, GetBook, GetLimits, GetOrders, Logon, LogonAck, Logout, MaintenanceAlert, ManageKey,
    Notice, Ping, PlaceOrder, Pong, Regime, Reply, Report, Routed, SetLeverage, SetMarginMode,
    SignableRequest, Signed, Withdraw,
)
from cluster.scopes import FORWARD, REQUIRED_SCOPES, missing_scope
from cluster.signing import RECV_WINDOW_MS, KeyEntry, key_id, key_table

MAX_PENDING_REFS = 200_000
MAX_TRACKED_ADDRESSES = 100_000  # addresses with failed logons remembered (the oldest go first)


class LogonPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Session caps and the pacing of failed logons (per source address). The defaults are
    NodeConf's: the topology's [nodes.gateway] sets them."""

    max_sessions_per_ip: int = 64
    max_sessions_per_key: int = 16
    free_failures: int = 3  # failures answered at once; each further one doubles the wait
    delay_ms: int = 1000  # the wait after the first failure past the free ones
    max_failures: int = 10  # at this many the address is locked out ...
    lockout_ms: int = 300_000  # ... for this long; failures older than this are forgotten

    @classmethod
    def from_conf(cls, conf: NodeConf) -> LogonPolicy:
        return cls(max_sessions_per_ip=conf.max_sessions_per_ip,
                   max_sessions_per_key=conf.max_sessions_per_key,
                   free_failures=conf.free_logon_failures, delay_ms=conf.logon_delay_ms,
                   max_failures=conf.max_logon_failures, lockout_ms=conf.logon_lockout_ms)

    def wait_ms(self, failures: int) -> int:
        """How long an address with `failures` recent failed logons waits before its next try."""
        if failures >= self.max_failures:
            return self.lockout_ms
        if failures <= self.free_failures:
            return 0
        return min(self.delay_ms << min(failures - self.free_failures - 1, 30), self.lockout_ms)


class LogonFailures:
    __slots__ = ("count", "last_ns", "blocked_until_ns")

    def __init__(self) -> None:
        self.count = 0
        self.last_ns = 0
        self.blocked_until_ns = 0


class Session:
    __slots__ = ("session_id", "account", "scopes", "allowed", "last_seen_ns", "ip", "api_key",
                 "limits", "last_nonce", "must_sign", "closed", "key_id")

    def __init__(self, session_id: int, account: str, scopes: tuple[str, ...], now_ns: int,
                 ip: str = "", api_key: str = "") -> None:
        self.session_id = session_id
        self.account = account
        self.scopes = scopes
        self.ip = ip
        self.api_key = api_key
        self.key_id = key_id(api_key)  # how risk knows the key (Routed.key_id)
        self.limits = None  # its rate-limit buckets (limits.SessionLimits), given at logon
        self.last_nonce = -1  # of its last signed request: a nonce must grow (no replays)
        self.must_sign = False  # its key requires every request signed
        self.closed: tuple[str, dict] | None = None  # why its key no longer serves it (set_keys)
        self.last_seen_ns = now_ns
        self.set_scopes(scopes)

    def set_scopes(self, scopes: tuple[str, ...]) -> None:
        # Worked out once at logon (and when the key file changes): _admit runs for every request.
        self.scopes = scopes
        self.allowed = frozenset(t for t, needed in REQUIRED_SCOPES.items()
                                 if any(scope in scopes for scope in needed))


class Gateway:
    def __init__(self, api_keys: dict[str, tuple[str, tuple[str, ...]]],
                 symbols: dict[str, dict], first_ref: int = 1,
                 collateral: tuple[str, str] = ("", ""),
                 policy: LogonPolicy | None = None, limits: LimitsPolicy | None = None,
                 keys: dict[str, KeyEntry] | None = None,
                 recv_window_ms: int = RECV_WINDOW_MS, started_ms: int = 0) -> None:
        self.topology_keys = dict(api_keys)  # api key -> (account, scopes), the topology's
        self.api_keys: dict[str, tuple[str, tuple[str, ...]]] = {}  # ... and the key file's
        self.policy = policy or LogonPolicy()
        self.limiter = Limiter(limits or LimitsPolicy(enabled=False))
        self.regimes: dict[str, Regime] = {}  # symbol -> its latest regime (the oracle's)
        self.keys: dict[str, KeyEntry] = {}  # api key -> secret, signature rule, IP allow-list
        self.recv_window_ms = recv_window_ms
        self.logon_nonces: dict[str, int] = {}  # api key -> nonce of its last signed logon
        # The nonces seen before a restart are gone with it: a signed request older than this
        # gateway's start is refused, so one captured before the restart cannot be replayed.
        self.started_ms = started_ms
        self._bodies = msgspec.msgpack.Decoder(SignableRequest)
        self.sessions_by_ip: dict[str, int] = {}
        self.sessions_by_key: dict[str, int] = {}
        self.logon_failures: OrderedDict[str, LogonFailures] = OrderedDict()
        # wall clock minus the injected clock: a lockout's end is told in wall-clock ms
        self._wall_offset_ns = 0
        self.symbols = symbols
        self.collateral = collateral  # (name, atom), told at logon
        self.sessions: dict[bytes, Session] = {}
        self.set_keys(keys or {})
        self.by_account: dict[str, dict[bytes, None]] = {}
        self.refs: OrderedDict[int, tuple[bytes, int, dict]] = OrderedDict()  # + usage
        # A restarted gateway must not reuse the refs of requests still in flight: an answer to
        # one of them would go to whichever new request got that number (another client).
        self.next_ref = first_ref
        self.next_session = 1

    @property
    def wall_offset_ns(self) -> int:
        return self._wall_offset_ns

    @wall_offset_ns.setter
    def wall_offset_ns(self, offset: int) -> None:
        self._wall_offset_ns = self.limiter.wall_offset_ns = offset

    # Effects: ("client", identity, message) | (node, message)

    def on_request(self, identity: bytes, msg, now_ns: int = 0, ip: str = "",
                   signed: bool = False) -> list[tuple]:
        """`now_ns` is a monotonic clock; `ip` the address of the connection (at logon);
        `signed`: `msg` came out of a Signed whose signature, timestamp and nonce were checked."""
        t = type(msg)
        if t is Signed:
            return self._signed(identity, msg, now_ns, ip)
        session = self.sessions.get(identity)
        if session is not None:
            session.last_seen_ns = now_ns
            if session.closed is not None:  # its key was revoked or no longer allows its address
                self._drop(identity)
                return [("client", identity, Error(req_id=msg.req_id, reason=session.closed[0],
                                                   detail=session.closed[1]))]
            if session.must_sign and not signed:
                return [("client", identity, Error(req_id=msg.req_id, reason="signature_required",
                                                   detail={"request": t.__name__}))]
            refused, usage = self.limiter.admit(msg, now_ns, session.ip, limits=session.limits)
        else:
            refused, usage = self.limiter.admit(msg, now_ns, ip)
        if refused is not None:
            return [("client", identity, Error(req_id=msg.req_id, reason=refused[0],
                                               detail=refused[1], usage=usage))]
        if t is Logon:
            effects = self._logon(identity, msg, now_ns, ip, signed)
            return [(to, who, msgspec.structs.replace(answer, usage=usage))
                    for to, who, answer in effects] if usage else effects
        if t is Logout:
            if session is None:
                return [("client", identity, Error(req_id=msg.req_id, reason="not_logged_on",
                                                   detail={"request": "Logout"}))]
            self._drop(identity)
            return [("client", identity, Ack(req_id=msg.req_id, action="logged_out",
                                             detail={"account": session.account}))]
        if t is Ping and not msg.full:
            return [("client", identity, Pong(req_id=msg.req_id, hops=msg.hops, usage=usage))]
        if session is None:
            return [("client", identity, Error(req_id=msg.req_id, reason="not_logged_on", detail={
                "request": "Ping(full)" if t is Ping else t.__name__}, usage=usage))]
        refused = self._admit(session, msg)
        if refused is not None:
            return [("client", identity, msgspec.structs.replace(refused, usage=usage))]
        if t is GetLimits:
            return [("client", identity, self._limits_view(session, msg, usage, now_ns))]
        if t is ManageKey:  # the shell writes the key file (nodes/gateway/key_admin.py)
            if not signed:  # a secret is made or changed only for a request signed with one
                return [("client", identity, Error(req_id=msg.req_id, reason="signature_required",
                                                   detail={"request": "ManageKey"}, usage=usage))]
            return [("keys", identity, msg, session.account, usage)]
        if t is GetBook:
            if msg.symbol not in self.symbols:
                return [("client", identity, Error(req_id=msg.req_id, reason="unknown_symbol",
                                                   detail={"symbol": msg.symbol}, usage=usage))]
            return [("matching", Routed(ref=self._ref(identity, msg.req_id, usage), account="",
                                        body=msg))]
        return [("risk", Routed(ref=self._ref(identity, msg.req_id, usage),
                                account=session.account, body=msg, scopes=session.scopes,
                                key_id=session.key_id))]

    def _admit(self, session: Session, msg) -> Error | None:
        """Refuse before the request leaves the gateway (scopes now; IP lists, rate limits later)."""
        t = type(msg)
        if t in session.allowed or t not in REQUIRED_SCOPES:
            return None
        return Error(req_id=msg.req_id, reason="missing_scope",
                     detail=missing_scope(msg, session.scopes))

    # ------------------------------------------------------------------ limits and the market

    def on_regime(self, msg: Regime, now_ns: int) -> list[tuple]:
        """A symbol's volatility regime (the oracle's, repeated every second). The most severe
        regime of any symbol sets the venue's limits (rate_limits.scale); when that changes the
        rules it scales, every account with a session gets an explanation record and a private
        Notice per rule: which rule, old -> new, why (regime, symbol, the numbers), until when."""
        self.regimes[msg.symbol] = msg
        worst = max(self.regimes.values(), key=lambda r: REGIMES.index(r.regime))
        previous = self.limiter.regime
        if worst.regime == previous:
            return []
        changes = self.limiter.set_regime(worst.regime)
        wall_ns = now_ns + self.wall_offset_ns
        out: list[tuple] = []
        for name, old, new in changes:
            numbers = {
                "old_limit": old.limit, "old_burst": old.capacity, "new_limit": new.limit,
                "new_burst": new.capacity, "window_ms": new.window_ms,
                "scale_ppm": self.limiter.scale_ppm(name), "regime": worst.regime,
                "previous_regime": previous, "symbol": worst.symbol,
                "realized_vol_ppm": worst.realized_vol_ppm, "threshold_ppm": worst.threshold_ppm,
                "vol_window_s": worst.window_s,
                "until": "every symbol's regime is back to normal" if worst.regime != "normal"
                else "the next regime change"}
            decision = f"{_rate(old)} -> {_rate(new)}"
            for account, identities in self.by_account.items():
                notice = Notice(rule=f"gateway.limit.{name}", subject=account, decision=decision,
                                numbers=numbers, ts_ns=wall_ns)
                out.append(("explain", Explanation(ts_ns=wall_ns, node="gateway",
                                                   rule=notice.rule, subject=account,
                                                   decision=decision, numbers=numbers)))
                out.extend(("client", identity, notice) for identity in identities)
        return out

    def _limits_view(self, session: Session, msg: GetLimits, usage: dict, now_ns: int):
        """The limits in force for an account now, what they are without the market, and why."""
        account = msg.account or session.account
        if account != session.account and "admin" not in session.scopes:
            return Error(req_id=msg.req_id, reason="not_your_account", usage=usage, detail={
                "account": account, "session_account": session.account, "required": "admin"})
        limiter = self.limiter
        detail: dict = {"account": account, "enabled": int(limiter.enabled),
                        "regime": limiter.regime}
        worst = [r for r in self.regimes.values() if r.regime == limiter.regime]
        if worst and limiter.regime != "normal":
            detail.update(regime_symbol=worst[0].symbol,
                          realized_vol_ppm=worst[0].realized_vol_ppm,
                          threshold_ppm=worst[0].threshold_ppm)
        for name in limiter.RULES:
            rule, base = limiter.rules[name], getattr(limiter.policy, name)
            detail.update({f"{name}.limit": rule.limit, f"{name}.burst": rule.capacity,
                           f"{name}.window_ms": rule.window_ms,
                           f"{name}.base_limit": base.limit,
                           f"{name}.scale_ppm": limiter.scale_ppm(name)})
            bucket = limiter.buckets[name].get(account)
            if bucket is not None:
                bucket.refill(now_ns)
                detail[f"{name}.used"] = bucket.used()
        return Ack(req_id=msg.req_id, action="limits", detail=detail, usage=usage)

    def set_keys(self, keys: dict[str, KeyEntry]) -> int:
        """The key file (re)read: which keys log on, as which account, with which scopes and
        rules. A live session whose key is now revoked or gone, or whose address the key no
        longer allows, is refused at its next request (and ended); one whose scopes or signature
        rule changed is served by the new ones. Returns how many sessions changed."""
        self.keys = dict(keys)
        self.api_keys = table = key_table(self.topology_keys, keys)
        changed = 0
        for session in self.sessions.values():
            found, entry = table.get(session.api_key), keys.get(session.api_key)
            before = (session.closed, session.scopes, session.must_sign)
            if found is None or found[0] != session.account:
                session.closed = ("key_revoked", {"account": session.account})
            elif entry is not None and not entry.allows(session.ip):
                session.closed = ("ip_not_allowed", {
                    "ip": session.ip, "allow": ",".join(str(n) for n in entry.allow),
                    "account": session.account})
            else:
                session.set_scopes(tuple(found[1]))
                session.must_sign = entry is not None and entry.require_signature
            changed += before != (session.closed, session.scopes, session.must_sign)
        return changed

    def disconnected(self, identity: bytes) -> str | None:
        """The client's connection is gone: forget its session (its account, or None if unknown),
        so that reports stop fanning out to it."""
        session = self.sessions.get(identity)
        if session is None:
            return None
        self._drop(identity)
        return session.account

    def _drop(self, identity: bytes) -> None:
        session = self.sessions.pop(identity)
        _count_down(self.sessions_by_ip, session.ip)
        _count_down(self.sessions_by_key, session.api_key)
        sessions = self.by_account.get(session.account)
        if sessions is not None:
            sessions.pop(identity, None)
            if not sessions:
                del self.by_account[session.account]

    def expire(self, now_ns: int, idle_ns: int) -> list[str]:
        """Forget sessions silent for longer than `idle_ns`; their accounts, for the log."""
        stale = [i for i, s in self.sessions.items() if now_ns - s.last_seen_ns > idle_ns]
        accounts = [self.sessions[i].account for i in stale]
        for identity in stale:
            self._drop(identity)
        return accounts

    def _signed(self, identity: bytes, msg: Signed, now_ns: int, ip: str) -> list[tuple]:
        """Check a signed request, then handle what it holds as if sent plainly; a refusal names
        what failed with the numbers (server_time, timestamp, recv_window; nonce, last_nonce)."""
        def refuse(reason: str, **detail) -> list[tuple]:
            session = self.sessions.get(identity)
            limits = session.limits if session is not None else None
            throttled, usage = self.limiter.admit(msg, now_ns, ip, limits=limits)  # costs a token
            if throttled is not None:
                reason, detail = throttled
            return [("client", identity, Error(req_id=msg.req_id, reason=reason, detail=detail,
                                               usage=usage))]

        try:
            inner = self._bodies.decode(msg.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return refuse("invalid_message", error=f"signed body: {exc}"[:200])
        if type(inner) is Ping:  # the trace starts here (as a plain Ping's: the node stamps it)
            inner = Ping(req_id=inner.req_id, hops=[("gateway", now_ns)], full=inner.full)
        if inner.req_id != msg.req_id:
            return refuse("invalid_message", error="req_id differs from the signed body's",
                          body_req_id=inner.req_id)
        session = self.sessions.get(identity)
        if type(inner) is Logon:
            api_key, session_id, last_nonce = inner.api_key, 0, self.logon_nonces.get(
                inner.api_key, -1)
            if inner.forwarded_for:  # a forwarder's logon paces the client it speaks for
                forwarded, refused = self._forwarded_ip(identity, inner, ip)
                ip = ip if refused is not None else forwarded
        elif session is None:
            return refuse("not_logged_on", request=type(inner).__name__)
        else:
            api_key, session_id, last_nonce = (session.api_key, session.session_id,
                                               session.last_nonce)
        if type(inner) is Logon:
            failures = self.logon_failures.get(ip)
            if api_key not in self.api_keys or (
                    failures is not None and now_ns < failures.blocked_until_ns):
                # an unknown key, or a paced address: refused (and counted) as a plain logon is,
                # so that signing a guess goes no faster than sending it (signed=True: _logon
                # refuses these before it reads it, and a forwarder's session, which takes only
                # signed requests, must hear the reason, not signature_required)
                return self.on_request(identity, inner, now_ns, ip, signed=True)
        entry = self.keys.get(api_key)
        if entry is None:
            return refuse("invalid_signature", error="the key has no secret to sign with")
        if not entry.verify(session_id, msg.ts_ms, msg.nonce, msg.body, msg.sig):
            detail = {"session": session_id, "nonce": msg.nonce, "timestamp": msg.ts_ms}
            if type(inner) is Logon:  # a wrong secret is a failed logon
                detail.update(self._pacing(self._failed_logon(ip, now_ns), now_ns, ip))
            return refuse("invalid_signature", **detail)
        server_ms = (now_ns + self.wall_offset_ns) // 1_000_000
        if abs(server_ms - msg.ts_ms) > self.recv_window_ms:
            return refuse("stale_request", server_time=server_ms, timestamp=msg.ts_ms,
                          recv_window=self.recv_window_ms, off_by_ms=server_ms - msg.ts_ms)
        if msg.ts_ms < self.started_ms:
            return refuse("stale_request", server_time=server_ms, timestamp=msg.ts_ms,
                          recv_window=self.recv_window_ms, gateway_started=self.started_ms,
                          why="signed before this gateway started, so its nonce cannot be checked")
        if msg.nonce <= last_nonce:
            return refuse("replayed_request", nonce=msg.nonce, last_nonce=last_nonce)
        if type(inner) is Logon:
            self.logon_nonces[api_key] = msg.nonce
        else:
            session.last_nonce = msg.nonce
        return self.on_request(identity, inner, now_ns, ip, signed=True)

    def _logon(self, identity: bytes, msg: Logon, now_ns: int = 0, ip: str = "",
               signed: bool = False) -> list[tuple]:
        if msg.version != PROTOCOL_VERSION:
            return [("client", identity, Error(req_id=msg.req_id, reason="unsupported_version",
                                               detail={"version": msg.version,
                                                       "supported": PROTOCOL_VERSION}))]
        if msg.forwarded_for:  # from here on the logon is the client's, from its address
            ip, refused = self._forwarded_ip(identity, msg, ip)
            if refused is not None:
                if refused.reason == "forwarding_not_allowed":  # a failed logon of the sender
                    refused.detail.update(self._pacing(self._failed_logon(ip, now_ns), now_ns, ip))
                return [("client", identity, refused)]
        failures = self.logon_failures.get(ip)
        if failures is not None and now_ns < failures.blocked_until_ns:
            # Paced: refused without looking at the key, so guessing goes no faster.
            locked = failures.count >= self.policy.max_failures
            return [("client", identity, Error(
                req_id=msg.req_id, reason="logon_locked_out" if locked else "logon_delayed",
                detail=self._pacing(failures, now_ns, ip)))]
        found = self.api_keys.get(msg.api_key)
        if found is None:
            failures = self._failed_logon(ip, now_ns)
            return [("client", identity, Error(req_id=msg.req_id, reason="invalid_api_key",
                                               detail=self._pacing(failures, now_ns, ip)))]
        account, scopes = found
        entry = self.keys.get(msg.api_key)
        if entry is not None and entry.require_signature and not signed:
            return [("client", identity, Error(req_id=msg.req_id, reason="signature_required",
                                               detail={"request": "Logon"}))]
        if entry is not None and not entry.allows(ip):
            self._failed_logon(ip, now_ns)
            return [("client", identity, Error(req_id=msg.req_id, reason="ip_not_allowed", detail={
                "ip": ip, "allow": ",".join(str(n) for n in entry.allow), "account": account}))]
        old = self.sessions.get(identity)
        if old is None or old.ip != ip or old.api_key != msg.api_key:
            # (a logon again on the same session with the same key takes no new place)
            for kind, counts, key, limit in (
                    ("ip", self.sessions_by_ip, ip, self.policy.max_sessions_per_ip),
                    ("key", self.sessions_by_key, msg.api_key, self.policy.max_sessions_per_key)):
                if counts.get(key, 0) >= limit:
                    return [("client", identity, Error(
                        req_id=msg.req_id, reason="too_many_sessions",
                        detail={"per": kind, "sessions": counts[key], "limit": limit,
                                **({"ip": ip} if kind == "ip" else {"account": account})}))]
        if old is not None:
            self._drop(identity)
        session = Session(self.next_session, account, scopes, now_ns, ip, msg.api_key)
        session.limits = self.limiter.session(ip, msg.api_key, account, now_ns)
        session.must_sign = entry is not None and entry.require_signature
        self.next_session += 1
        self.sessions[identity] = session
        self.sessions_by_ip[ip] = self.sessions_by_ip.get(ip, 0) + 1
        self.sessions_by_key[msg.api_key] = self.sessions_by_key.get(msg.api_key, 0) + 1
        self.by_account.setdefault(account, {})[identity] = None
        return [("client", identity, LogonAck(
            req_id=msg.req_id, account=account, session=session.session_id, symbols=self.symbols,
            collateral=self.collateral[0], atom=self.collateral[1]))]

    def _forwarded_ip(self, identity: bytes, msg: Logon, ip: str) -> tuple[str, Error | None]:
        """(the client address a forwarded logon is for, None), or (the sender's address, the
        refusal): only a session of a key with the "forward" scope (the REST facade's) may name
        one, for a key that is not itself a forwarder, and it must be an IP address."""
        current = self.sessions.get(identity)
        claimed = msg.forwarded_for
        if current is None or FORWARD not in current.scopes or current.closed is not None:
            return ip, Error(req_id=msg.req_id, reason="forwarding_not_allowed", detail={
                "forwarded_for": claimed, "required": FORWARD,
                "session_scopes": ",".join(current.scopes) if current is not None else "",
                "why": "only the REST facade's own session may name a client address"})
        found = self.api_keys.get(msg.api_key)
        if found is not None and FORWARD in found[1]:
            return ip, Error(req_id=msg.req_id, reason="forwarding_not_allowed", detail={
                "forwarded_for": claimed, "api_key_scopes": ",".join(found[1]),
                "why": "a forwarding key logs on only for itself"})
        try:
            address = str(ipaddress.ip_address(claimed))
        except ValueError:
            return ip, Error(req_id=msg.req_id, reason="invalid_forwarded_address", detail={
                "forwarded_for": claimed, "error": "not an IPv4 or IPv6 address"})
        return address, None

    def _failed_logon(self, ip: str, now_ns: int) -> LogonFailures:
        failures = self.logon_failures.pop(ip, None)
        if failures is None:
            failures = LogonFailures()
            if len(self.logon_failures) >= MAX_TRACKED_ADDRESSES:
                self.logon_failures.popitem(last=False)
        elif now_ns - failures.last_ns > self.policy.lockout_ms * 1_000_000:
            failures.count = 0  # quiet for a lockout's length: start afresh
        self.logon_failures[ip] = failures  # (most recent last)
        failures.count += 1
        failures.last_ns = now_ns
        failures.blocked_until_ns = now_ns + self.policy.wait_ms(failures.count) * 1_000_000
        return failures

    def _pacing(self, failures: LogonFailures, now_ns: int, ip: str) -> dict:
        """The numbers a failed or paced logon is answered with."""
        wait_ns = max(0, failures.blocked_until_ns - now_ns)
        return {"ip": ip, "attempts": failures.count, "max_attempts": self.policy.max_failures,
                "retry_after_ms": -(-wait_ns // 1_000_000),
                "until_ms": (failures.blocked_until_ns + self.wall_offset_ns) // 1_000_000
                if wait_ns else 0}

    def _ref(self, identity: bytes, req_id: int, usage: dict) -> int:
        ref = self.next_ref
        self.next_ref += 1
        self.refs[ref] = (identity, req_id, usage)  # the answer carries the usage at admission
        if len(self.refs) > MAX_PENDING_REFS:
            self.refs.popitem(last=False)  # an answer that never came; the client has timed out
        return ref

    def on_internal(self, msg) -> list[tuple]:
        t = type(msg)
        if t is MaintenanceAlert:  # private: like a fill, to the account's sessions only
            account = msg.account.partition(":")[0]  # "ACCOUNT:SYMBOL" for an isolated position
            msg, t = Report(account=account, event=msg), Report
        if t is Report:
            out: list[tuple] = []
            requester = self.refs.pop(msg.ref, None) if msg.ref else None
            if requester is not None:
                identity, req_id, usage = requester
                out.append(("client", identity, msgspec.structs.replace(msg, ref=req_id,
                                                                        usage=usage)))
            plain = None
            for identity in self.by_account.get(msg.account, ()):
                if requester is None or identity != requester[0]:
                    if plain is None:  # built only when another session will see it
                        plain = msgspec.structs.replace(msg, ref=0) if msg.ref else msg
                    out.append(("client", identity, plain))
            return out
        if t is Reply:
            requester = self.refs.pop(msg.ref, None)
            if requester is None:
                return []
            identity, req_id, usage = requester
            return [("client", identity, msgspec.structs.replace(msg.body, req_id=req_id,
                                                                 usage=usage))]
        return []


def _count_down(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _rate(rule) -> str:
    return f"{rule.limit}/{rule.window_ms}ms burst {rule.capacity}"
