"""The netsim controller's state: which links are shaped how, node clock skews, and the commands
that change them. Pure: the supervisor owns one, publishes its table, and carries out node faults.

Commands (AdminRequest.cmd / args):
    netsim_show                          -> the table
    netsim_set     link, settings        -> shape one link (settings merge into what it had); a
                                            link is a node link (known_links) or one client's
                                            (client:NAME->gateway, gateway->client:NAME: its proxy)
    netsim_clear   [link]                -> back to no shaping (held messages are released)
    netsim_profile name [profiles]       -> every link from a named hardware profile (+ overrides)
    netsim_partition links, down         -> take links down / heal them
    skew           node, ns              -> add `ns` to a node's clock
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec

from netsim.link import LinkSettings
from netsim.models import build, duration_ns, rate_bps
from netsim.proxy import client_link_name
from netsim.shaper import PUB_LINKS, known_links, unreliable

PROFILES = Path(__file__).with_name("profiles.toml")
NODES = ("gateway", "risk", "matching", "oracle", "liquidator", "feeds")
DEFAULT = msgspec.to_builtins(LinkSettings())


class ControlError(ValueError):
    pass


def _check_link(link: str) -> str:
    if link not in known_links() and client_link_name(link) is None:
        raise ControlError(f"unknown link {link!r}; links are: {', '.join(known_links())}, "
                           "and one client's client:NAME->gateway / gateway->client:NAME "
                           "(netsim/proxy.py)")
    return link


def _settings(raw: dict, link: str) -> LinkSettings:
    if isinstance(raw.get("latency"), (str, int, float)):  # latency = "2ms": a constant delay
        raw = {**raw, "latency": {"model": "constant", "latency": raw["latency"]}}
    try:
        settings = msgspec.convert(raw, LinkSettings)
        if settings.latency:
            build(settings.latency)
        duration_ns(settings.rto)
        if not 0 <= settings.loss < 1:
            raise ControlError("loss must be in [0, 1)")
        if settings.reorder and not unreliable(link):
            # ZeroMQ over TCP or ipc delivers one connection's messages in order, and the nodes
            # rely on it (risk reads matching's events as they happened): no real fault does this.
            raise ControlError(f"{link} cannot reorder: it is a reliable link, which delivers in "
                               "order as the TCP connection it models does; reorder applies to "
                               f"the market-data links ({', '.join(sorted(PUB_LINKS.values()))})")
        if settings.on_full == "drop" and client_link_name(link):
            raise ControlError(f"{link} cannot drop: it carries a TCP stream through a proxy, "
                               "and a dropped chunk would cut a frame in two; it blocks")
        if settings.on_full not in ("block", "drop"):
            raise ControlError("on_full must be block or drop")
        if settings.bandwidth and rate_bps(settings.bandwidth) < 1:
            raise ControlError("bandwidth must be at least 1 bit/s (a link that carries nothing "
                               "is down: --down)")
        if settings.queue_limit < 1:
            raise ControlError("queue_limit must be at least 1")
    except (msgspec.ValidationError, ValueError) as exc:
        raise ControlError(f"bad link settings: {exc}") from None
    return settings


def load_profiles(path: Path = PROFILES) -> dict[str, dict]:
    return tomllib.loads(path.read_text())["profile"]


class NetsimState:
    def __init__(self) -> None:
        self.links: dict[str, dict] = {}
        self.skew_ns: dict[str, int] = {}
        self.version = 1

    def table(self) -> dict:
        return {"version": self.version, "links": dict(sorted(self.links.items())),
                "skew_ns": dict(self.skew_ns)}

    def _bump(self) -> dict:
        self.version += 1
        return self.table()

    def handle(self, cmd: str, args: dict) -> dict:
        if cmd == "netsim_show":
            return {**self.table(), "known_links": known_links()}
        if cmd == "netsim_set":
            link = _check_link(args.get("link", ""))
            merged = {**self.links.get(link, {}), **args.get("settings", {})}
            self.links[link] = msgspec.to_builtins(_settings(merged, link))
            return self._bump()
        if cmd == "netsim_clear":
            link = args.get("link")
            if link:
                self.links.pop(_check_link(link), None)
            else:
                self.links.clear()
                self.skew_ns.clear()
            return self._bump()
        if cmd == "netsim_partition":
            down = bool(args.get("down", True))
            links = [_check_link(l) for l in args.get("links", [])] or known_links()
            for link in links:
                if not down and link not in self.links:
                    continue
                merged = {**self.links.get(link, {}), "down": down}
                settings = msgspec.to_builtins(_settings(merged, link))
                if settings == DEFAULT:  # healed back to nothing: the direct path again
                    self.links.pop(link, None)
                else:
                    self.links[link] = settings
            return self._bump()
        if cmd == "netsim_profile":
            profiles = args.get("profiles") or load_profiles()
            name = args.get("name", "")
            if name not in profiles:
                raise ControlError(f"unknown profile {name!r}; profiles: {', '.join(sorted(profiles))}")
            profile = profiles[name]
            default = {k: v for k, v in profile.items() if k != "links"}
            own = profile.get("links", {})
            self.links = {link: msgspec.to_builtins(_settings({**default, **own.get(link, {})}, link))
                          for link in known_links()}
            return self._bump()
        if cmd == "skew":
            node = args.get("node", "")
            if node not in NODES:
                raise ControlError(f"unknown node {node!r}")
            self.skew_ns[node] = int(args.get("ns", 0))
            return self._bump()
        raise ControlError(f"unknown command {cmd!r}")
