"""`perpx keys create|revoke|rotate` over the wire (#20): the gateway's core hands a signed,
admin-scoped ManageKey to its shell, refuses it unsigned or without the admin scope, and the
shell's key_admin writes the run's key file with the CLI's own functions."""

from __future__ import annotations

import stat

from cluster.protocol import Ack, Error, Logon, ManageKey, Signed, encode_one
from cluster.signing import KeyEntry, load_keys, sign
from nodes.gateway.key_admin import manage_key
from nodes.gateway.sessions import Gateway

SECRET = b"s" * 32
MS = 1_000_000
WALL_MS = 1_700_000_000_000
TOPOLOGY = {"k-admin": ("admin", ("admin",)), "k-alice": ("alice", ("trade",))}


def signed(message, session: int, nonce: int) -> Signed:
    body = encode_one(message)
    return Signed(req_id=message.req_id, ts_ms=WALL_MS, nonce=nonce, body=body,
                  sig=sign(SECRET, session, WALL_MS, nonce, body))


def logged_on(api_key: str) -> tuple[Gateway, int]:
    gw = Gateway(TOPOLOGY, {"BTC-PERP": {}}, keys={k: KeyEntry(SECRET) for k in TOPOLOGY})
    gw.wall_offset_ns = WALL_MS * MS
    (effect,) = gw.on_request(b"me", signed(Logon(req_id=1, api_key=api_key), 0, 1), 0, "1.2.3.4")
    return gw, effect[-1].session


def test_the_gateway_hands_a_signed_admin_request_to_its_shell_and_refuses_the_rest():
    create = ManageKey(req_id=2, action="create", account="alice", scopes=["read"])
    gw, session = logged_on("k-admin")
    ((kind, identity, msg, by, _usage),) = gw.on_request(b"me", signed(create, session, 2), 0)
    assert (kind, identity, msg, by) == ("keys", b"me", create, "admin")
    # unsigned, from the admin key too: a secret is never made for a bearer key's request
    ((_, _, unsigned),) = gw.on_request(b"me", create, 0)
    assert (unsigned.reason, unsigned.detail) == ("signature_required", {"request": "ManageKey"})
    # signed, by a trade key: the admin scope is missing
    gw, session = logged_on("k-alice")
    ((_, _, refused),) = gw.on_request(b"me", signed(create, session, 2), 0)
    assert type(refused) is Error and refused.reason == "missing_scope"
    assert (refused.detail["required"], refused.detail["scopes"]) == ("admin", "trade")


def test_create_rotate_revoke_write_the_key_file_and_refusals_change_nothing(tmp_path):
    accounts, topo_keys = {"alice", "admin"}, {k: a for k, (a, _) in TOPOLOGY.items()}
    made, numbers = manage_key(tmp_path, accounts, topo_keys, ManageKey(
        req_id=3, action="create", account="alice", scopes=["read", "trade"],
        allow=["127.0.0.0/8"]), "admin")
    assert type(made) is Ack and made.action == "key_created" and made.req_id == 3
    api_key, secret = made.detail["api_key"], made.detail["secret"]
    entry = load_keys(tmp_path)[api_key]
    assert (entry.account, entry.scopes, entry.secret.hex(), entry.require_signature) == (
        "alice", ("read", "trade"), secret, True)
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    assert "secret" not in numbers and numbers["by"] == "admin"  # (what the audit journal keeps)

    rotated, _ = manage_key(tmp_path, accounts, topo_keys,
                            ManageKey(action="rotate", api_key=api_key), "admin")
    assert rotated.action == "key_rotated" and rotated.detail["secret"] != secret
    assert load_keys(tmp_path)[api_key].secret.hex() == rotated.detail["secret"]

    revoked, numbers = manage_key(tmp_path, accounts, topo_keys,
                                  ManageKey(action="revoke", api_key=api_key), "admin")
    assert (revoked.action, numbers["account"]) == ("key_revoked", "alice")
    assert load_keys(tmp_path)[api_key].revoked
    # a topology key has no entry yet: revoking it makes one
    manage_key(tmp_path, accounts, topo_keys, ManageKey(action="revoke", api_key="k-alice"), "admin")
    assert load_keys(tmp_path)["k-alice"].revoked

    before = (tmp_path / "keys.json").read_bytes()
    for msg, reason in ((ManageKey(action="rotate", api_key=api_key), "unknown_key"),  # revoked
                        (ManageKey(action="revoke", api_key="k-never"), "unknown_key"),
                        (ManageKey(action="create", account="mallory", scopes=["read"]),
                         "unknown_account"),
                        (ManageKey(action="create", account="alice", scopes=["root"]),
                         "invalid_key"),
                        (ManageKey(action="create", account="alice", scopes=[]), "invalid_key"),
                        (ManageKey(action="create", account="alice", scopes=["read"],
                                   allow=["not-a-cidr"]), "invalid_key")):
        answer, numbers = manage_key(tmp_path, accounts, topo_keys, msg, "admin")
        assert (type(answer), answer.reason, numbers) == (Error, reason, None), msg
    assert (tmp_path / "keys.json").read_bytes() == before
