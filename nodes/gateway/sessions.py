"""Gateway core: client sessions, API-key logon, request routing. Pure (no sockets, no clock).

A session is a ROUTER identity. It logs on with an API key and is bound to one account. Requests are
wrapped as `Routed(ref, account, body)`; `ref` is the gateway's own number for the request, and the
first answer carrying it goes back to the requesting session with the client's `req_id`. Everything
else for an account (fills, cancels, triggers) goes to every session of that account.

`_admit` is where a request is refused before it leaves the gateway: API-key scopes are checked
there now; IP allow-lists and rate limits belong there too.
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from cluster.protocol import (
    PROTOCOL_VERSION, Ack, AdjustIsolatedMargin, AmendOrder, CancelAll, CancelOrder, Deposit, Error,
    GetAccount, GetBook, GetOrders, Logon, LogonAck, Logout, MaintenanceAlert, Ping, PlaceOrder,
    Reply, Report, Routed, SetLeverage, SetMarginMode, Withdraw,
)

MAX_PENDING_REFS = 200_000
# The scope a session's API key needs for each request (any one of them).
REQUIRED_SCOPES: dict[type, tuple[str, ...]] = {
    PlaceOrder: ("trade",), AmendOrder: ("trade",), CancelOrder: ("trade",),
    CancelAll: ("trade",), SetLeverage: ("trade",), SetMarginMode: ("trade",),
    AdjustIsolatedMargin: ("trade",), GetAccount: ("trade", "read", "admin"),
    GetOrders: ("trade", "read", "admin"),
    Deposit: ("admin",), Withdraw: ("admin",),
}


class Session:
    __slots__ = ("session_id", "account", "scopes", "allowed", "last_seen_ns")

    def __init__(self, session_id: int, account: str, scopes: tuple[str, ...], now_ns: int) -> None:
        self.session_id = session_id
        self.account = account
        self.scopes = scopes
        # Worked out once at logon: _admit runs for every request.
        self.allowed = frozenset(t for t, needed in REQUIRED_SCOPES.items()
                                 if any(scope in scopes for scope in needed))
        self.last_seen_ns = now_ns


class Gateway:
    def __init__(self, api_keys: dict[str, tuple[str, tuple[str, ...]]],
                 symbols: dict[str, dict], first_ref: int = 1,
                 collateral: tuple[str, str] = ("", "")) -> None:
        self.api_keys = dict(api_keys)  # api key -> (account, scopes)
        self.symbols = symbols
        self.collateral = collateral  # (name, atom), told at logon
        self.sessions: dict[bytes, Session] = {}
        self.by_account: dict[str, dict[bytes, None]] = {}
        self.refs: OrderedDict[int, tuple[bytes, int]] = OrderedDict()
        # A restarted gateway must not reuse the refs of requests still in flight: an answer to
        # one of them would go to whichever new request got that number (another client).
        self.next_ref = first_ref
        self.next_session = 1

    # Effects: ("client", identity, message) | (node, message)

    def on_request(self, identity: bytes, msg, now_ns: int = 0) -> list[tuple]:
        t = type(msg)
        if t is Logon:
            return self._logon(identity, msg, now_ns)
        session = self.sessions.get(identity)
        if session is not None:
            session.last_seen_ns = now_ns
        if t is Logout:
            if session is None:
                return [("client", identity, Error(req_id=msg.req_id, reason="not_logged_on",
                                                   detail={"request": "Logout"}))]
            self._drop(identity)
            return [("client", identity, Ack(req_id=msg.req_id, action="logged_out",
                                             detail={"account": session.account}))]
        if t is Ping:
            ref = self._ref(identity, msg.req_id)
            return [("risk", Routed(ref=ref, account=session.account if session else "", body=msg))]
        if t is GetBook:
            if msg.symbol not in self.symbols:
                return [("client", identity, Error(req_id=msg.req_id, reason="unknown_symbol",
                                                   detail={"symbol": msg.symbol}))]
            return [("matching", Routed(ref=self._ref(identity, msg.req_id), account="", body=msg))]
        if session is None:
            return [("client", identity, Error(req_id=msg.req_id, reason="not_logged_on",
                                               detail={"request": t.__name__}))]
        refused = self._admit(session, msg)
        if refused is not None:
            return [("client", identity, refused)]
        return [("risk", Routed(ref=self._ref(identity, msg.req_id), account=session.account,
                                body=msg))]

    def _admit(self, session: Session, msg) -> Error | None:
        """Refuse before the request leaves the gateway (scopes now; IP lists, rate limits later)."""
        t = type(msg)
        if t in session.allowed or t not in REQUIRED_SCOPES:
            return None
        return Error(req_id=msg.req_id, reason="missing_scope", detail={
            "request": t.__name__, "required": " or ".join(REQUIRED_SCOPES[t]),
            "scopes": ",".join(session.scopes)})

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

    def _logon(self, identity: bytes, msg: Logon, now_ns: int = 0) -> list[tuple]:
        if msg.version != PROTOCOL_VERSION:
            return [("client", identity, Error(req_id=msg.req_id, reason="unsupported_version",
                                               detail={"version": msg.version,
                                                       "supported": PROTOCOL_VERSION}))]
        found = self.api_keys.get(msg.api_key)
        if found is None:
            return [("client", identity, Error(req_id=msg.req_id, reason="invalid_api_key"))]
        account, scopes = found
        if identity in self.sessions:
            self._drop(identity)
        session = Session(self.next_session, account, scopes, now_ns)
        self.next_session += 1
        self.sessions[identity] = session
        self.by_account.setdefault(account, {})[identity] = None
        return [("client", identity, LogonAck(
            req_id=msg.req_id, account=account, session=session.session_id, symbols=self.symbols,
            collateral=self.collateral[0], atom=self.collateral[1]))]

    def _ref(self, identity: bytes, req_id: int) -> int:
        ref = self.next_ref
        self.next_ref += 1
        self.refs[ref] = (identity, req_id)
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
                identity, req_id = requester
                out.append(("client", identity, msgspec.structs.replace(msg, ref=req_id)))
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
            identity, req_id = requester
            return [("client", identity, msgspec.structs.replace(msg.body, req_id=req_id))]
        return []
