"""The CLI's terminal text: aligned columns, and every renderer reads only what the JSON holds."""

from __future__ import annotations

from cluster import render


def test_table_aligns_text_left_and_numbers_right():
    lines = render.table([["BTC-PERP", "0.01", "-"], ["ETH", "-12.5", "7"]], ["symbol", "qty", "n"])
    assert lines == ["symbol    qty    n", "--------  -----  -", "BTC-PERP   0.01  -",
                     "ETH       -12.5  7"]


def test_status_account_and_book():
    status = {"cluster": "c", "state": "running", "run_dir": "/r", "failure": None,
              "client_endpoint": "tcp://h:1", "market_data_endpoint": "tcp://h:2",
              "nodes": {"risk": {"state": "running", "pid": 7, "alive": True, "restarts": 1,
                                 "heartbeat_age_ms": 40, "stats": {"msgs_in": 9, "errors": 0}}},
              "events": [{"event": "node_died", "node": "risk", "how": "signal SIGKILL",
                          "wall_ns": 1, "mono_ns": 2}]}
    text = render.cluster_status(status)
    assert "cluster c: running" in text and "node_died risk how=signal SIGKILL" in text
    assert any(line.split()[:3] == ["risk", "running", "7"] for line in text.splitlines())
    view = {"account": "bob", "collateral": "USDC", "open_orders": 1, "positions": [],
            "human": {k: "1" for k in ("equity", "available", "wallet_balance", "position_margin",
                                        "order_margin", "maintenance_margin", "fees_paid")}}
    assert "no positions" in render.account(view)
    human = {"qty_human": "10", "entry_price_human": "2001", "mark_human": "2004.34",
             "unrealized_pnl_human": "33.4", "initial_margin_human": "400.868",
             "isolated_margin_human": "500.2", "maintenance_margin_human": "115.28",
             "liquidation_price_human": "1972.16", "leverage": 50, "adl_quantile": 5}
    view = {**view, "positions": [{"symbol": "ETH-PERP", "mode": "isolated", **human},
                                  {"symbol": "BTC-PERP", "mode": "cross", **human}],
            "human": {**view["human"], "isolated_margin": "500.2"}}
    text = render.account(view)
    assert "isolated 500.2" in text.splitlines()[2]
    # the margin column: an isolated position's own wallet, a cross position's IM
    assert text.splitlines()[-2].split()[:8] == ["ETH-PERP", "isolated", "10", "2001", "2004.34",
                                                 "33.4", "500.2", "115.28"]
    assert text.splitlines()[-1].split()[6] == "400.868"
    paid = {"symbol": "BTC-PERP", "payment": -6_612_183, "human": {
        "rate_pct": "0.0221438", "qty": "1", "mark": "29860.2", "payment": "-6.612183"}}
    got = {**paid, "payment": 25, "human": {**paid["human"], "payment": "0.000025"}}
    text = render.account({**view, "funding": [paid, got]})
    assert text.splitlines()[-2].split() == ["BTC-PERP", "0.0221438%", "1", "29860.2", "paid",
                                             "6.612183"]
    assert text.splitlines()[-1].split()[-2:] == ["received", "0.000025"]
    fill = {"trade_id": 2, "order_id": 3, "symbol": "BTC-PERP", "side": 1, "liquidity": "taker",
            "human": {"qty": "0.2", "price": "30100", "fee": "3.01", "remaining": "0"}}
    text = render.account({**view, "fills": [fill]})
    at = text.splitlines().index("fills (latest first):")
    assert text.splitlines()[at + 3].split() == ["2", "3", "BTC-PERP", "buy", "0.2", "30100",
                                                 "taker", "3.01", "0"]
    book = {"symbol": "X", "book_seq": 3, "prices": None,
            "bids": [{"price": "9", "qty": "1"}], "asks": []}
    text = render.book(book)
    assert "no mark from the oracle yet" in text and text.splitlines()[-1].split() == ["1", "9"]


def test_netsim_table_says_each_link_in_the_words_it_was_set_with():
    table = {"version": 7, "skew_ns": {"oracle": -250_000_000, "risk": 0},
             "known_links": ["gateway->risk", "risk->matching", "matching->risk"],
             "links": {
                 "gateway->risk": {"latency": {"model": "constant", "latency": "2ms",
                                               "jitter": "200us"},
                                   "loss": 0.01, "rto": "200ms", "bandwidth": "10mbit",
                                   "queue_limit": 500, "on_full": "drop", "down": False,
                                   "reorder": True, "seed": 1},
                 "risk->matching": {"latency": {"model": "mixture", "parts": [
                     [0.99, {"model": "lognormal", "median": "300us", "sigma": 0.4}],
                     [0.01, {"model": "pareto", "min": "2ms", "alpha": 2}]]},
                     "loss": 0.0, "rto": "200ms", "bandwidth": "", "queue_limit": 100_000,
                     "on_full": "block", "down": True, "reorder": False, "seed": 1}}}
    text = render.netsim(table)
    rows = {line.split()[0]: line for line in text.splitlines()[3:] if "->" in line[:22]}
    assert text.startswith("netsim table v7: 2 links shaped")
    assert "2ms jitter 200us" in rows["gateway->risk"] and "1% (rto 200ms)" in rows["gateway->risk"]
    assert "10mbit (queue 500, drop when full)" in rows["gateway->risk"]
    assert rows["gateway->risk"].endswith("up, reorders")
    assert ("mixture of 0.99 lognormal median 300us sigma 0.4 | 0.01 pareto min 2ms alpha 2"
            in rows["risk->matching"]) and rows["risk->matching"].endswith("DOWN")
    assert "clock skew: oracle -250 ms" in text and "risk +0" not in text
    assert text.splitlines()[-1] == "direct (unshaped): matching->risk"
    empty = render.netsim({"version": 3, "links": {}, "skew_ns": {}, "known_links": ["a->b"]})
    assert empty == "netsim table v3: no link shaped, every message takes the direct path"


def test_faults_ping_and_calculator_in_words():
    assert render.node_fault({"node": "oracle", "op": "pause", "pid": 42}) == "PAUSED  oracle (pid 42)"
    assert render.feed_fault({"sent": {"action": "shock", "venue": "", "symbol": "BTC-PERP",
                                       "ppm": -120_000}}) == \
        "FEED SHOCK  every venue  BTC-PERP  -12% (-120000 ppm)"
    assert render.feed_fault({"sent": {"action": "freeze", "venue": "bravo", "symbol": "",
                                       "ppm": 0, "duration_ms": 3000}}) == \
        "FEED FREEZE  venue bravo  for 3 s"
    ping = render.ping({"rtt_us": 1500.0, "hops": [{"node": "gateway", "since_send_us": 500.0},
                                                   {"node": "risk", "since_send_us": 700.0}]})
    assert ping.splitlines()[0] == "round trip 1.5 ms"  # was "1,500 us": us below 1 ms, ms above
    assert [line.split() for line in ping.splitlines()[4:]] == [
        ["client->gateway", "500", "us"], ["gateway->risk", "200", "us"],
        ["risk->client", "800", "us"]]
    assert [render.duration_us(us) for us in (0.4, 999, 1000, 12_593, 206_086)] == [
        "0 us", "999 us", "1 ms", "12.6 ms", "206 ms"]
    calc = render.fields({"symbol": "BTC-PERP", "funding_received": None, "tier_range": ["0", "5"],
                          "stop": {"stop": "28000", "warning": None}})
    assert calc.splitlines() == ["symbol      BTC-PERP", "tier range  0 .. 5", "stop        stop 28000"]
    # an inexact figure to 6 decimals on the terminal (its JSON keeps calc's 10)
    assert render.fields({"distance_pct": "~9.4567404427", "exact": "27000"}).splitlines() == [
        "distance pct  ~9.456740", "exact         27000"]


def test_a_liquidation_in_contracts_prices_and_collateral():
    from cluster import config
    from cluster.humanize import Units

    units = Units.of(config.load())  # BTC-PERP: tick 0.1, lot 0.001; USDC atom 1e-6
    data = {"liquidation_id": 9, "account": "alice", "symbol": "BTC-PERP", "status": "closed",
            "started": "2026-11-24T00:20:47.451+00:00", "path": ["trigger", "backstop", "end"],
            "closed_lots": {"backstop": 30_000}, "forced_fees": 0, "insurance_fund_delta": 1_500_000,
            "counterparties": ["backstop: bs:20000@267417;bs2:10000@267418"],
            "steps": [{"time": "2026-11-24T00:20:47.451+00:00", "rule": "liquidation.plan",
                       "decision": "book_exhausted",
                       "numbers": {"account": "alice", "symbol": "BTC-PERP", "step": 2,
                                   "bankruptcy_price": 267417, "equity": -9_041_900_000,
                                   "needed": 20_545, "avg_price": "267417.5",
                                   "counterparties": "", "tier": 3}}]}
    text = render.liquidation(data, units)
    assert "closed backstop 30  forced fees 0 USDC  insurance fund +1.5 USDC" in text
    assert "backstop: bs 20 @ 26741.7, bs2 10 @ 26741.8" in text
    step = text.splitlines()[-1]
    assert step.startswith("00:20:47.451  plan")
    assert step.endswith("bankruptcy price 26741.7, equity -9041.9, needed 20.545, "
                         "avg price 26741.75, tier 3")


def test_scenario_steps_one_line_each():
    step = render.scenario_step({"at_s": 0.3, "action": "set", "command": "netsim_set", "ok": True,
                                 "args": {"link": "risk->gateway", "settings": {
                                     "latency": "200us", "loss": 0.01, "rto": "50ms"}}})
    assert step == "t+0.300s   set          risk->gateway    ok  latency 200us, loss 1% (rto 50ms)"
    part = render.scenario_step({"at_s": 10, "action": "partition", "ok": True,
                                 "args": {"links": ["risk->matching"], "down": True}})
    assert part.split() == ["t+10.000s", "partition", "risk->matching", "ok"]
    feed = render.scenario_step({"at_s": 2, "action": "feed", "ok": False, "error": "unknown venue",
                                 "args": {"action": "freeze", "venue": "zulu"}})
    assert feed.split()[1:] == ["feed", "zulu", "REFUSED", "unknown", "venue"]
    healed = render.scenario_step({"at_s": 20, "action": "heal_at_end", "command": "feed",
                                   "ok": True, "args": {"action": "heal"}})
    assert healed.split() == ["t+20.000s", "heal", "feeds", "-", "ok"]


def test_cluster_down_says_what_it_did():
    base = {"stopped": True, "was_running": True, "supervisor_pid": 7, "supervisor_stopped": True,
            "killed_leftovers": [], "stale_sockets_removed": 0}
    assert render.cluster_down(base) == "cluster stopped (supervisor pid 7)"
    assert render.cluster_down({**base, "supervisor_stopped": False, "killed_leftovers": ["risk"]}) \
        == "cluster supervisor did not stop in time (supervisor pid 7); killed leftover nodes: risk"
    assert render.cluster_down({**base, "was_running": False, "stale_sockets_removed": 3}) == \
        "no cluster was running; removed 3 stale sockets"
