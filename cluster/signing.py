"""API key secrets and request signatures (#20), shared by the gateway and the SDK: one definition
of the canonical bytes, the signature and the key file.

A request after logon (and the logon itself) may travel inside `Signed`: `body` is the request's
msgpack bytes exactly as sent, and the signature is HMAC-SHA256, with the key's secret, over

    b"perpx-sig-v1" | session (8 bytes) | ts_ms (8) | nonce (8) | body

(big-endian; session 0 for the logon). The gateway refuses a signature that does not match, a
timestamp outside `recv_window_ms` of its clock, and a nonce not above the session's last one (a
replay). A key whose entry says `require_signature` is refused unsigned.

The secrets live in `<run>/keys.json` (mode 0600), written at `cluster up` for the topology's
accounts when missing, never in the topology: {"keys": {API_KEY: {"secret": HEX,
"require_signature": bool, "allow": [CIDR, ...]}}}. `allow` (empty: any address) is the key's IP
allow-list, checked at logon.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from pathlib import Path

from cluster.scopes import SCOPES

DOMAIN = b"perpx-sig-v1"
RECV_WINDOW_MS = 5000  # a signed request older (or newer) than this by the gateway's clock is refused
KEY_FILE = "keys.json"


def canonical(session: int, ts_ms: int, nonce: int, body: bytes) -> bytes:
    return b"".join((DOMAIN, session.to_bytes(8, "big", signed=False),
                     ts_ms.to_bytes(8, "big", signed=False),
                     nonce.to_bytes(8, "big", signed=False), body))


def sign(secret: bytes, session: int, ts_ms: int, nonce: int, body: bytes) -> bytes:
    return hmac.new(secret, canonical(session, ts_ms, nonce, body), hashlib.sha256).digest()


def verify(secret: bytes, session: int, ts_ms: int, nonce: int, body: bytes, sig: bytes) -> bool:
    return hmac.compare_digest(sign(secret, session, ts_ms, nonce, body), sig)


# Ed25519: the venue holds only the public key; the client signs the same canonical bytes with
# its private key. Needs `cryptography`; without it an Ed25519 key cannot log on (HMAC still can).
try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey, Ed25519PublicKey,
    )
except ImportError:  # pragma: no cover (a dependency; HMAC keys do not need it)
    Ed25519PrivateKey = Ed25519PublicKey = None


def ed25519_keypair() -> tuple[bytes, bytes]:
    """(private key, public key), 32 raw bytes each."""
    private = Ed25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def sign_ed25519(private_key: bytes, session: int, ts_ms: int, nonce: int, body: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private_key).sign(
        canonical(session, ts_ms, nonce, body))


def signer(secret: bytes | None = None, ed25519_key: bytes | None = None):
    """What the SDK signs with: f(session, ts_ms, nonce, body) -> signature (None: unsigned)."""
    if ed25519_key:
        private = Ed25519PrivateKey.from_private_bytes(ed25519_key)
        return lambda session, ts_ms, nonce, body: private.sign(
            canonical(session, ts_ms, nonce, body))
    if secret:
        return lambda session, ts_ms, nonce, body: sign(secret, session, ts_ms, nonce, body)
    return None


def verify_ed25519(public_key, session: int, ts_ms: int, nonce: int, body: bytes,
                   sig: bytes) -> bool:
    """`public_key`: an Ed25519PublicKey (KeyEntry.public_key)."""
    try:
        public_key.verify(sig, canonical(session, ts_ms, nonce, body))
    except InvalidSignature:
        return False
    return True


def in_range(value: int) -> bool:
    """Whether a session, timestamp or nonce fits the canonical form (8 unsigned bytes)."""
    return 0 <= value < 2**64


class KeyEntry:
    """One key's entry in the key file. `account` and `scopes` are set for a key made with
    `perpx keys create` (a topology account's key takes them from the topology, unless its entry
    names other scopes); a `revoked` key logs nothing on and its sessions end."""

    __slots__ = ("secret", "require_signature", "allow", "account", "scopes", "revoked",
                 "public_key")

    def __init__(self, secret: bytes, require_signature: bool = False,
                 allow: tuple = (), account: str = "", scopes: tuple[str, ...] = (),
                 revoked: bool = False, public_key: bytes = b"") -> None:
        self.secret = secret  # HMAC; b"" for an Ed25519 key
        # an Ed25519 key's public half (then requests are signed with its private key)
        self.public_key = (Ed25519PublicKey.from_public_bytes(public_key)
                           if public_key and Ed25519PublicKey is not None else None)
        if public_key and self.public_key is None:
            raise ValueError("an Ed25519 key needs the cryptography package")
        self.require_signature = require_signature
        self.allow = allow  # ip_network objects; () = any address
        self.account = account
        self.scopes = scopes
        self.revoked = revoked

    def verify(self, session: int, ts_ms: int, nonce: int, body: bytes, sig: bytes) -> bool:
        if self.public_key is not None:
            return verify_ed25519(self.public_key, session, ts_ms, nonce, body, sig)
        return bool(self.secret) and verify(self.secret, session, ts_ms, nonce, body, sig)

    def allows(self, ip: str) -> bool:
        if not self.allow:
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:  # not an IP (an ipc connection): only an empty list allows it
            return False
        return any(address in network for network in self.allow)


def key_id(api_key: str) -> str:
    """How the gateway names a session's key to risk (Routed.key_id) and risk's key table names
    it: a fingerprint, so that no bearer key travels the internal links or lands in a journal."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:24]


def topology_keys(topo) -> dict[str, tuple[str, tuple[str, ...]]]:
    """API key -> (account, scopes), as the topology gives them (without the key file)."""
    return {a.api_key: (a.name, tuple(a.scopes)) for a in topo.accounts.values()}


def key_table(topology: dict[str, tuple[str, tuple[str, ...]]],
              keys: dict[str, KeyEntry]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Which API key logs on as which account with which scopes: the topology's keys with the
    key file's entries over them. A revoked key is gone; a key made by `perpx keys create` names
    its account and scopes (trade when none); a topology key's entry may name other scopes. The
    one rule the gateway serves sessions by and risk re-checks requests by."""
    table = dict(topology)
    for api_key, entry in keys.items():
        if entry.revoked:
            table.pop(api_key, None)
        elif entry.account:
            table[api_key] = (entry.account, tuple(entry.scopes) or ("trade",))
        elif entry.scopes and api_key in table:
            table[api_key] = (table[api_key][0], tuple(entry.scopes))
    return table


def key_file(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / KEY_FILE


def ensure_key_file(run_dir: str | os.PathLike, api_keys: list[str]) -> Path:
    """The run's key file, with a fresh secret for each of `api_keys` it does not hold yet
    (written 0600, atomically); entries already there are kept as they are."""
    path = key_file(run_dir)
    data = read_raw(path) if path.exists() else {"keys": {}}
    missing = [k for k in api_keys if k not in data["keys"]]
    if not missing and path.exists():
        return path
    for api_key in missing:
        data["keys"][api_key] = {"secret": secrets.token_hex(32), "require_signature": False,
                                 "allow": []}
    write_raw(path, data)
    return path


def read_raw(path: Path) -> dict:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise ValueError(f"{path}: expected {{\"keys\": {{API_KEY: {{...}}}}}}")
    return data


def write_raw(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=1, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


KEY_FILE_CHECK_MS = 500  # how often the gateway and the REST facade look at the key file


class KeyFileWatch:
    """Has the run's key file changed since last asked (made, rotated or revoked keys)? By its
    modification time and size: a rewrite is atomic (write_raw), so a reader sees old or new."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = key_file(run_dir)
        self.seen = self._version()

    def _version(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def changed(self) -> bool:
        version = self._version()
        if version == self.seen:
            return False
        self.seen = version
        return True


def load_keys(run_dir: str | os.PathLike) -> dict[str, KeyEntry]:
    """API key -> its entry, from the run's key file ({} when there is none)."""
    path = key_file(run_dir)
    if not path.exists():
        return {}
    entries = {}
    for api_key, raw in read_raw(path)["keys"].items():
        try:
            scopes = tuple(raw.get("scopes", ()))
            unknown = [s for s in scopes if s not in SCOPES]
            if unknown:
                raise ValueError(f"unknown scopes {unknown}; known: {', '.join(SCOPES)}")
            entries[api_key] = KeyEntry(
                bytes.fromhex(raw.get("secret", "")), bool(raw.get("require_signature", False)),
                tuple(ipaddress.ip_network(c, strict=False) for c in raw.get("allow", ())),
                str(raw.get("account", "")), scopes, bool(raw.get("revoked", False)),
                bytes.fromhex(raw.get("ed25519_public_key", "")))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: key {api_key!r}: {exc}") from None
    return entries


def secret_for(run_dir: str | os.PathLike, api_key: str) -> bytes | None:
    """The HMAC secret the SDK and CLI sign with, from the run's key file (None if it has none:
    an Ed25519 key's private half is not kept there)."""
    entry = load_keys(run_dir).get(api_key)
    return entry.secret or None if entry is not None else None


# ---------------------------------------------------------------------- key management (perpx keys)

def _validated(scopes: list[str], allow: list[str]) -> tuple[list[str], list[str]]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes {scopes}: each one of {', '.join(SCOPES)}, at least one")
    return scopes, [str(ipaddress.ip_network(c, strict=False)) for c in allow]


def create_key(run_dir, account: str, scopes: list[str], allow: list[str] = (),
               require_signature: bool = True, ed25519: bool = False) -> tuple[str, str]:
    """A new key for `account` in the run's key file: (api key, secret hex). The secret is shown
    this once; the file keeps it for the gateway (and the SDK on this machine). An Ed25519 key's
    secret is its private key, which the file does not keep (only the public key)."""
    scopes, allow = _validated(list(scopes), list(allow))
    path = key_file(run_dir)
    data = read_raw(path) if path.exists() else {"keys": {}}
    api_key = "k-" + secrets.token_hex(12)
    entry = {"account": account, "scopes": scopes, "allow": allow,
             "require_signature": require_signature or ed25519}
    if ed25519:
        private, public = ed25519_keypair()
        secret, entry["ed25519_public_key"] = private.hex(), public.hex()
    else:
        secret = entry["secret"] = secrets.token_hex(32)
    data["keys"][api_key] = entry
    write_raw(path, data)
    return api_key, secret


FORWARDER_KEY = "rest-forwarder"  # the REST facade's key with the "forward" scope (#25)


def ensure_forwarder_key(run_dir) -> None:
    """The REST facade's forwarding key in the run's key file, made at `cluster up` when the
    topology runs the facade: signed logons only; kept as it is when already there."""
    path = key_file(run_dir)
    data = read_raw(path) if path.exists() else {"keys": {}}
    if FORWARDER_KEY in data["keys"]:
        return
    data["keys"][FORWARDER_KEY] = {"account": "rest", "scopes": ["forward"], "allow": [],
                                   "require_signature": True, "secret": secrets.token_hex(32)}
    write_raw(path, data)


def revoke_key(run_dir, api_key: str) -> dict:
    """Mark a key revoked (kept, for the record: a revoked key is never made valid again)."""
    path = key_file(run_dir)
    data = read_raw(path) if path.exists() else {"keys": {}}
    entry = data["keys"].get(api_key)
    if entry is None:  # a topology key without an entry yet: its entry is the revocation
        entry = data["keys"][api_key] = {"secret": secrets.token_hex(32), "allow": []}
    entry["revoked"] = True
    write_raw(path, data)
    return entry


def rotate_key(run_dir, api_key: str) -> str:
    """A new secret for a key (its new hex): what was signed with the old one is refused."""
    path = key_file(run_dir)
    data = read_raw(path)
    entry = data["keys"].get(api_key)
    if entry is None or entry.get("revoked"):
        raise KeyError(api_key)
    if "ed25519_public_key" in entry:
        private, public = ed25519_keypair()
        entry["ed25519_public_key"] = public.hex()
        write_raw(path, data)
        return private.hex()
    entry["secret"] = secrets.token_hex(32)
    write_raw(path, data)
    return entry["secret"]


def list_keys(run_dir) -> dict[str, dict]:
    """Every key's entry without its secret."""
    path = key_file(run_dir)
    if not path.exists():
        return {}
    return {k: {f: v for f, v in e.items() if f != "secret"}
            for k, e in sorted(read_raw(path)["keys"].items())}
