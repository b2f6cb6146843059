"""The CLI's security commands (#20), kept apart from cluster/cli.py: `perpx limits show ACCOUNT`,
the rate limits in force for an account now, what they are without the market, and why; and
`perpx keys create|list|revoke|rotate`, the API keys of the run's key file (an admin's: the file is
its owner's alone, 0600; the gateway reads a change within a second)."""

from __future__ import annotations

import argparse
import asyncio

RULES = ("account_orders", "account_weight", "key_weight", "ip_weight", "exit_floor")


def _command(group, name: str, text: str, example: str, parents):
    """A subcommand as the CLI's own are made: a description, and an example in the epilog."""
    return group.add_parser(name, parents=list(parents), help=text, description=text,
                            epilog="example:\n  " + example,
                            formatter_class=argparse.RawDescriptionHelpFormatter)


def _group(sub, name: str, text: str):
    return sub.add_parser(name, help=text, description=text).add_subparsers(
        dest="action", required=True, metavar="ACTION")


def add_parsers(sub, common) -> None:
    limits = _group(sub, "limits", "rate limits in force, and why")
    show = _command(limits, "show", "an account's rate limits now, what they are without the "
                    "market, and why (its own key, or --api-key of an admin)",
                    "perpx limits show alice", [common])
    show.add_argument("name", help="the account")
    show.add_argument("--api-key", metavar="KEY", help="log on with this key (an admin's, for "
                      "another account)")
    show.set_defaults(fn=cmd_limits_show)

    keys = _group(sub, "keys", "API keys and their secrets in the run's key file (admin)")
    create = _command(keys, "create", "a new key for an account; its secret is shown this once",
                      "perpx keys create alice --scopes read,trade --allow 127.0.0.1/32", [common])
    create.add_argument("name", help="the account")
    create.add_argument("--scopes", default="trade", metavar="LIST",
                        help="comma-separated: read, trade, transfer, admin (default: trade)")
    create.add_argument("--allow", default="", metavar="CIDRS",
                        help="comma-separated CIDRs the key may log on from (default: any)")
    create.add_argument("--unsigned-ok", action="store_true",
                        help="accept its requests unsigned too (default: every request signed)")
    create.add_argument("--ed25519", action="store_true",
                        help="an Ed25519 key: the venue keeps its public half; the private half "
                             "is shown this once (sign with it: Client(ed25519_key=...))")
    create.set_defaults(fn=cmd_keys_create)
    wire = ("through the gateway as this admin-scoped key, signed (with its secret from the run's "
            "key file or $PERPX_API_SECRET), instead of editing the key file here")
    create.add_argument("--api-key", metavar="ADMIN_KEY", help=wire)
    _command(keys, "list", "every key: account, scopes, state, allow-list (never a secret)",
             "perpx keys list", [common]).set_defaults(fn=cmd_keys_list)
    for verb, fn, text in (("revoke", cmd_keys_revoke, "end a key; its sessions are refused at "
                            "their next request"),
                           ("rotate", cmd_keys_rotate, "a new secret for a key; what the old one "
                            "signs is refused")):
        one = _command(keys, verb, text, f"perpx keys {verb} k-0123abcd", [common])
        one.add_argument("key", help="the API key")
        one.add_argument("--api-key", metavar="ADMIN_KEY", help=wire)
        one.set_defaults(fn=fn)


def cmd_limits_show(args) -> int:
    from cluster.cli import EXIT_OK, emit, with_client

    args.account = None if args.api_key else args.name

    async def run(client, topo):
        ack = await client.limits(args.name)
        emit(ack.detail, args.json, render_limits)
        return EXIT_OK

    return asyncio.run(with_client(args, run))


def render_limits(detail: dict) -> str:
    regime = detail["regime"]
    why = "" if regime == "normal" else (
        f" (on {detail.get('regime_symbol', '?')}: realized volatility "
        f"{detail.get('realized_vol_ppm', '?')} ppm, threshold {detail.get('threshold_ppm', '?')} "
        f"ppm)")
    lines = [f"{detail['account']}: limits for the {regime} regime{why}"
             + ("" if detail.get("enabled", 1) else " (rate limits are off)")]
    for rule in RULES:
        if f"{rule}.limit" not in detail:
            continue
        scale = detail[f"{rule}.scale_ppm"]
        note = "" if scale == 1_000_000 else (
            f"  (x{scale / 1e6:g} of {detail[f'{rule}.base_limit']} while {regime})")
        used = f", {detail[f'{rule}.used']} used" if f"{rule}.used" in detail else ""
        lines.append(f"  {rule:<15} {detail[f'{rule}.limit']:>6} per {detail[f'{rule}.window_ms']} ms,"
                     f" burst {detail[f'{rule}.burst']}{used}{note}")
    return "\n".join(lines)


def _over_the_wire(args, request) -> dict:
    """A ManageKey sent through the gateway as the admin key --api-key names: the Ack's detail."""
    from cluster.cli import with_client

    args.account = None  # (the admin key's own account is whatever it logs on as)

    async def run(client, topo):
        return (await client.request(request)).detail

    return asyncio.run(with_client(args, run))


def cmd_keys_create(args) -> int:
    from cluster.cli import EXIT_OK, CliError, emit, load_topology
    from cluster.protocol import ManageKey
    from cluster.signing import create_key

    topo = load_topology(args)
    if args.name not in topo.accounts:
        raise CliError("unknown_account", f"no account {args.name!r} in {topo.path}")
    scopes = [s for s in args.scopes.split(",") if s]
    allow = [c for c in args.allow.split(",") if c]
    if args.api_key:
        made = _over_the_wire(args, ManageKey(
            action="create", account=args.name, scopes=scopes, allow=allow,
            require_signature=not args.unsigned_ok, ed25519=args.ed25519))
        api_key, secret = str(made["api_key"]), str(made["secret"])
    else:
        try:
            api_key, secret = create_key(topo.run_dir, args.name, scopes, allow,
                                         require_signature=not args.unsigned_ok,
                                         ed25519=args.ed25519)
        except ValueError as exc:
            raise CliError("invalid_key", str(exc)) from None
    emit({"api_key": api_key, "secret": secret, "account": args.name, "scopes": scopes,
          "allow": allow, "require_signature": not args.unsigned_ok or args.ed25519,
          "kind": "ed25519" if args.ed25519 else "hmac-sha256"}, args.json,
         lambda d: f"{d['api_key']} for {d['account']} ({','.join(d['scopes'])})\n"
                   f"secret {d['secret']}  (shown once; kept in the run's key file)")
    return EXIT_OK


def cmd_keys_list(args) -> int:
    from cluster.cli import EXIT_OK, emit, load_topology
    from cluster.signing import list_keys

    topo = load_topology(args)
    listed = list_keys(topo.run_dir)
    for account in topo.accounts.values():  # a topology key's account and scopes are the topology's
        entry = listed.setdefault(account.api_key, {})
        entry.setdefault("account", account.name)
        entry.setdefault("scopes", list(account.scopes))
    emit(listed, args.json, lambda keys: "\n".join(
        f"{k}  {e['account']:<10} {','.join(e['scopes']):<20} "
        f"{'revoked' if e.get('revoked') else 'signed' if e.get('require_signature') else 'active'}"
        f"{'  from ' + ','.join(e['allow']) if e.get('allow') else ''}"
        for k, e in sorted(keys.items())))
    return EXIT_OK


def _known_key(topo, api_key: str) -> None:
    from cluster.cli import CliError
    from cluster.signing import list_keys

    if api_key not in list_keys(topo.run_dir) and api_key not in {
            a.api_key for a in topo.accounts.values()}:
        raise CliError("unknown_key", f"no key {api_key!r} in the topology or the key file")


def cmd_keys_revoke(args) -> int:
    from cluster.cli import EXIT_OK, emit, load_topology
    from cluster.signing import revoke_key

    topo = load_topology(args)
    if args.api_key:
        from cluster.protocol import ManageKey
        _over_the_wire(args, ManageKey(action="revoke", api_key=args.key))
    else:
        _known_key(topo, args.key)
        revoke_key(topo.run_dir, args.key)
    emit({"api_key": args.key, "revoked": True}, args.json,
         lambda d: f"{d['api_key']} revoked: its sessions end at their next request")
    return EXIT_OK


def cmd_keys_rotate(args) -> int:
    from cluster.cli import CliError, load_topology
    from cluster.signing import rotate_key

    topo = load_topology(args)
    if args.api_key:
        from cluster.protocol import ManageKey
        secret = str(_over_the_wire(args, ManageKey(action="rotate", api_key=args.key))["secret"])
        return _rotated(args, secret)
    _known_key(topo, args.key)
    try:
        secret = rotate_key(topo.run_dir, args.key)
    except (KeyError, FileNotFoundError):
        raise CliError("unknown_key", f"{args.key!r} is revoked or has no secret yet") from None
    return _rotated(args, secret)


def _rotated(args, secret: str) -> int:
    from cluster.cli import EXIT_OK, emit

    emit({"api_key": args.key, "secret": secret}, args.json,
         lambda d: f"{d['api_key']}: new secret {d['secret']} (the old one is refused)")
    return EXIT_OK
