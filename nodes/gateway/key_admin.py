"""`perpx keys create|revoke|rotate` over the wire (#20): an admin-scoped, signed ManageKey, which
the gateway's shell carries out on the run's key file with the very functions the CLI's file path
uses (cluster/signing.py: written 0600, atomically), and answers. The gateway serves by the new
file at once; risk reads it when a request names a key it does not know, or within 500 ms.

The answer to a made or rotated key carries its secret, this once; the explanation record never
does (it names the key, its account and scopes, and the admin's account)."""

from __future__ import annotations

from cluster.protocol import Ack, Error, ManageKey
from cluster.signing import create_key, list_keys, revoke_key, rotate_key


def manage_key(run_dir, accounts, topology_keys, msg: ManageKey,
               by: str) -> tuple[Ack | Error, dict | None]:
    """(the answer, the explanation's numbers or None for a refusal). `accounts`: the topology's
    account names; `topology_keys`: its API keys (known without a key-file entry)."""
    req_id = msg.req_id
    if msg.action == "create":
        if msg.account not in accounts:
            return Error(req_id=req_id, reason="unknown_account",
                         detail={"account": msg.account}), None
        try:
            api_key, secret = create_key(run_dir, msg.account, list(msg.scopes), list(msg.allow),
                                         require_signature=msg.require_signature,
                                         ed25519=msg.ed25519)
        except ValueError as exc:
            return Error(req_id=req_id, reason="invalid_key", detail={"error": str(exc)[:200]}), None
        numbers = {"api_key": api_key, "account": msg.account, "scopes": ",".join(msg.scopes),
                   "allow": ",".join(msg.allow), "by": by,
                   "require_signature": int(msg.require_signature or msg.ed25519),
                   "kind": "ed25519" if msg.ed25519 else "hmac-sha256"}
        return Ack(req_id=req_id, action="key_created", detail={**numbers, "secret": secret}), \
            numbers
    known = list_keys(run_dir)
    if msg.api_key not in known and msg.api_key not in topology_keys:
        return Error(req_id=req_id, reason="unknown_key", detail={
            "api_key": msg.api_key, "why": "not in the topology or the key file"}), None
    account = known.get(msg.api_key, {}).get("account") or topology_keys.get(msg.api_key, "")
    numbers = {"api_key": msg.api_key, "account": account, "by": by}
    if msg.action == "revoke":
        revoke_key(run_dir, msg.api_key)
        return Ack(req_id=req_id, action="key_revoked", detail=numbers), numbers
    try:
        secret = rotate_key(run_dir, msg.api_key)
    except (KeyError, FileNotFoundError):
        return Error(req_id=req_id, reason="unknown_key", detail={
            "api_key": msg.api_key, "why": "revoked, or no secret yet"}), None
    return Ack(req_id=req_id, action="key_rotated", detail={**numbers, "secret": secret}), numbers
