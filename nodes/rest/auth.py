"""Request authentication and request weight for the REST facade, pure (the clock is passed in).

Signing is Binance's (API-COMPAT §3.1): HMAC-SHA256 over the raw query (GET/DELETE) or the raw form
body (POST/PUT) up to the last `&signature=`, byte for byte, never re-encoded; `timestamp` must lie
within `recvWindow` (default 5,000 ms, at most 60,000) before the server's time and at most 1,000 ms
ahead of it (-1021 otherwise).

Weight: Binance counts request weight per IP per minute and answers 429 with Retry-After past the
limit (418 when a client keeps going after that); the used weight goes back in
X-MBX-USED-WEIGHT-1M on every answer.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from pathlib import Path
from urllib.parse import parse_qsl

from nodes.rest.binance import ApiError

MAX_RECV_WINDOW_MS = 60_000
DEFAULT_RECV_WINDOW_MS = 5_000
BAN_AFTER_REFUSALS = 50  # 429s within one minute before the IP is answered 418


def load_secrets(path: str, run_dir: str = "") -> dict[str, str]:
    """api key -> the HMAC secret a REST client signs with: the one place the facade learns
    secrets. From the run's key file (#20: `perpx keys create|rotate|revoke`), each key's secret
    as its hex text, the string a ccxt user configures (revoked and Ed25519 keys have none here,
    nor has the facade's own forwarding key: it is no REST user's);
    or from `path` (TOML `key = "secret"`) when the topology names one."""
    if path:
        table = tomllib.loads(Path(path).read_text())
        return {str(k): str(v) for k, v in table.items()}
    from cluster.signing import load_keys

    from cluster.scopes import FORWARD

    return {key: entry.secret.hex() for key, entry in load_keys(run_dir).items()
            if entry.secret and not entry.revoked and FORWARD not in entry.scopes}


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def verify(raw: str, api_key: str, secrets: dict[str, str], now_ms: int) -> dict[str, str]:
    """The parameters of a signed request whose signature and timestamp hold, else ApiError."""
    if not api_key:
        raise ApiError(401, -2014, "API-key format invalid.")
    secret = secrets.get(api_key)
    if secret is None:
        raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
    head, sep, signature = raw.rpartition("&signature=")
    if not sep:
        if raw.startswith("signature="):
            head, signature = "", raw[len("signature="):]
        else:
            raise ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
    if "&" in signature:  # parameters after the signature are not covered by it
        raise ApiError(400, -1022, "Signature for this request is not valid.")
    if not hmac.compare_digest(sign(secret, head), signature.lower()):
        raise ApiError(400, -1022, "Signature for this request is not valid.")
    params = dict(parse_qsl(head, keep_blank_values=True))
    try:
        stamp = int(params.get("timestamp", ""))
        window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW_MS))
    except ValueError:
        raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.") from None
    if not 0 < window <= MAX_RECV_WINDOW_MS:
        raise ApiError(400, -1131, f"recvWindow must be less than {MAX_RECV_WINDOW_MS} (got {window}).")
    if stamp >= now_ms + 1000:
        raise ApiError(400, -1021, f"Timestamp for this request was 1000ms ahead of the server's time "
                       f"(timestamp {stamp}, server {now_ms}).")
    if now_ms - stamp > window:
        raise ApiError(400, -1021, f"Timestamp for this request is outside of the recvWindow "
                       f"(timestamp {stamp}, server {now_ms}, recvWindow {window}).")
    return params


class WeightLimiter:
    """Request weight per client address per clock minute (Binance's REQUEST_WEIGHT, 1 MINUTE)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._minute = -1
        self._used: dict[str, int] = {}
        self._refused: dict[str, int] = {}

    def charge(self, address: str, weight: int, now_ms: int) -> int:
        """Count `weight` for `address`; its weight used this minute, or ApiError 429 / 418."""
        minute = now_ms // 60_000
        if minute != self._minute:
            self._minute, self._used, self._refused = minute, {}, {}
        used = self._used.get(address, 0) + weight
        if used > self.per_minute:
            refused = self._refused[address] = self._refused.get(address, 0) + 1
            retry_s = max(1, -(-((minute + 1) * 60_000 - now_ms) // 1000))
            status = 418 if refused > BAN_AFTER_REFUSALS else 429
            raise ApiError(status, -1003, f"Too much request weight used; current limit is "
                           f"{self.per_minute} request weight per 1 MINUTE (used {used - weight}, "
                           f"this request {weight}). Please use the websocket for live updates "
                           "to avoid polling the API.", retry_s)
        self._used[address] = used
        return used

    def used(self, address: str) -> int:
        return self._used.get(address, 0)
