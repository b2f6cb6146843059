"""Which API key scope each client request needs (#20): one table, checked by the gateway at
admission and again by risk for every account operation it is handed, by the scopes its own key
table gives the key the Routed names (nodes/risk/keys.py), so that a request let through by
mistake, or sent by something other than the gateway, still moves nothing its key may not move."""

from __future__ import annotations

from cluster.protocol import (
    AdjustIsolatedMargin, AmendOrder, CancelAll, CancelOrder, Deposit, GetAccount, GetBook,
    GetLimits, GetOrders, ManageKey, Ping, PlaceOrder, SetAccountMarginMode, SetLeverage,
    SetMarginMode, SetPortfolioAccess, Withdraw,
)

# "forward": the REST facade's own key (#25): a session logged on with it may log users on for the
# client address it names (Logon.forwarded_for), so that per-address limits and allow-lists apply
# to the real client; it may make no account request itself
SCOPES = ("read", "trade", "transfer", "admin", "forward")
FORWARD = "forward"
ANY_SCOPE = SCOPES

REQUIRED_SCOPES: dict[type, tuple[str, ...]] = {
    PlaceOrder: ("trade",), AmendOrder: ("trade",), CancelOrder: ("trade",),
    CancelAll: ("trade",), SetLeverage: ("trade",), SetMarginMode: ("trade",),
    AdjustIsolatedMargin: ("trade",), GetAccount: ("trade", "read", "admin"),
    GetOrders: ("trade", "read", "admin"), SetAccountMarginMode: ("trade",),
    Deposit: ("admin",), Withdraw: ("transfer", "admin"),
    GetBook: ANY_SCOPE, Ping: ANY_SCOPE,  # (Ping: the full path; the gateway-local one is free)
    GetLimits: ANY_SCOPE, ManageKey: ("admin",), SetPortfolioAccess: ("admin",),
}


def missing_scope(request, scopes) -> dict | None:
    """None if `scopes` may make `request`; else the refusal's numbers."""
    t = type(request)
    needed = REQUIRED_SCOPES.get(t)
    if needed is None:
        return None
    for scope in needed:  # (a loop, not any(): risk runs this for every request)
        if scope in scopes:
            return None
    return {"request": t.__name__, "required": " or ".join(needed), "scopes": ",".join(scopes)}
