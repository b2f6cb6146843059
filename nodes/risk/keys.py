"""Risk's own view of which API key may do what (#20). Pure.

The gateway checks a request's scope at admission; risk checks it again for every account
operation it executes, by its own table rather than by what the message says, so that a Routed
sent by something other than the gateway (or let through by a gateway bug) moves nothing its key
may not move. The table comes in as an input (KeyTable: risk's shell reads the run's key file),
journaled like any other, so a replay refuses and accepts exactly what the live node did.

    keys.refusal(routed) -> None | (reason, numbers)

The reasons and numbers are the gateway's: `invalid_api_key` (a key risk does not know),
`key_revoked` (a revoked key, or one that is not this account's), `missing_scope` (the scope
needed, the scopes the key has), `not_your_account` (a transfer on another account's balance
without the admin scope: `transfer` moves only the key's own account's money).
"""

from __future__ import annotations

from cluster.protocol import Deposit, KeyTable, Routed, Withdraw
from cluster.scopes import REQUIRED_SCOPES, missing_scope
from cluster.signing import key_id, key_table


class KeyScopes:
    __slots__ = ("table", "revoked", "allowed")

    def __init__(self) -> None:
        # key_id -> (account, scopes); None until the shell hands a table in (a core driven
        # directly, as in most unit tests: then the message's own `scopes` are checked, if any)
        self.table: dict[str, tuple[str, tuple[str, ...]]] | None = None
        self.revoked: dict[str, str] = {}  # key_id -> its account ("" when it named none)
        # key_id -> the request types its scopes allow: worked out once per table, as the
        # gateway's Session.allowed is, since this runs for every request (derived from `table`)
        self.allowed: dict[str, frozenset] = {}

    def set(self, msg: KeyTable) -> None:
        self.table = {k: (account, tuple(scopes)) for k, (account, scopes) in msg.keys.items()}
        self.revoked = dict(msg.revoked)
        self._derive()

    def _derive(self) -> None:
        self.allowed = {k: frozenset(t for t, needed in REQUIRED_SCOPES.items()
                                     if any(scope in scopes for scope in needed))
                        for k, (_, scopes) in (self.table or {}).items()}

    # A snapshot keeps the table, not what it allowed: restored under a newer scope table (an
    # upgrade that tightened one), the allowed types are worked out again by the rule now in force.
    def __getstate__(self) -> dict:
        return {"table": self.table, "revoked": self.revoked}

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple):  # (written before: pickle's default for __slots__)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.table = state.get("table")
        self.revoked = state.get("revoked", {})
        self._derive()

    def holds(self, msg: KeyTable) -> bool:
        """Whether `msg` is the table in force already (then the shell need not journal it)."""
        return self.table is not None and self.revoked == msg.revoked and self.table == {
            k: (account, tuple(scopes)) for k, (account, scopes) in msg.keys.items()}

    def refusal(self, msg: Routed) -> tuple[str, dict] | None:
        body = msg.body
        t = type(body)
        if t not in REQUIRED_SCOPES:
            return None
        table = self.table
        if table is None:
            scopes = msg.scopes
            if scopes is None:
                return None
        else:
            found = table.get(msg.key_id)
            if found is not None and found[0] == msg.account and t in self.allowed[msg.key_id] \
                    and t is not Withdraw and t is not Deposit:
                return None  # (the common case, in two lookups)
            if found is None:
                if msg.key_id in self.revoked:
                    return "key_revoked", {"account": msg.account,
                                           "key_account": self.revoked[msg.key_id]}
                return "invalid_api_key", {"account": msg.account, "key_id": msg.key_id,
                                           "why": "not a key of this venue's key table"}
            account, scopes = found
            if account != msg.account:
                return "key_revoked", {"account": msg.account, "key_account": account}
        missing = missing_scope(body, scopes)
        if missing is not None:
            return "missing_scope", missing
        if (t is Withdraw or t is Deposit) and body.account != msg.account \
                and "admin" not in scopes:
            return "not_your_account", {"account": body.account, "session_account": msg.account,
                                        "required": "admin", "scopes": ",".join(scopes)}
        return None

    def state(self) -> dict | None:
        if self.table is None:
            return None
        return {"keys": sorted((k, a, list(s)) for k, (a, s) in self.table.items()),
                "revoked": sorted(self.revoked.items())}


def key_table_input(topology: dict[str, tuple[str, tuple[str, ...]]], entries: dict) -> KeyTable:
    """The KeyTable risk's shell journals: the topology's keys and the key file's `entries`
    (cluster/signing.py load_keys), by key_id, in a canonical order."""
    table = key_table(topology, entries)
    revoked = {key_id(api_key): entry.account or (topology.get(api_key) or ("",))[0]
               for api_key, entry in entries.items() if entry.revoked}
    return KeyTable(keys={key_id(k): table[k] for k in sorted(table)},
                    revoked={k: revoked[k] for k in sorted(revoked)})
