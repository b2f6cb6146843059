"""Event sourcing of the cores: for random input streams, a core restored from a snapshot taken at
any point and fed the rest of its inputs is the core fed everything from scratch, byte for byte in
state_hash(); and a node rebuilt from its journal (cluster/runner.py) is the node that wrote it."""

from __future__ import annotations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from cluster import config
from cluster.protocol import (
    CancelOrder, FundingRate, IndexMark, LinkSeq, MarkPrice, PlaceOrder, Routed, SetLeverage,
)
from cluster.recording import RecordingShell
from nodes.matching import service as matching_service
from nodes.matching.engine import MatchingEngine
from nodes.risk import service as risk_service
from nodes.risk.ledger import RiskEngine

TOPO = config.load()
SYMBOLS = sorted(TOPO.symbols)
ACCOUNTS = {"a": 5_000_000_000, "b": 5_000_000_000, "c": 300_000_000}

step = st.one_of(
    st.tuples(st.just("place"), st.sampled_from(sorted(ACCOUNTS)), st.sampled_from(SYMBOLS),
              st.sampled_from((1, -1)), st.integers(1, 300), st.integers(-20, 20),
              st.sampled_from(("GTC", "GTC", "IOC"))),
    st.tuples(st.just("cancel"), st.sampled_from(sorted(ACCOUNTS)), st.sampled_from(SYMBOLS),
              st.integers(1, 60)),
    st.tuples(st.just("mark"), st.sampled_from(SYMBOLS), st.integers(-300, 300)),
    st.tuples(st.just("funding"), st.sampled_from(SYMBOLS), st.integers(-500_000, 500_000)),
    st.tuples(st.just("leverage"), st.sampled_from(sorted(ACCOUNTS)), st.sampled_from(SYMBOLS),
              st.integers(1, 50)),
)


def record_inputs(script) -> tuple[list, list]:
    """Drive risk and matching together; return each core's inputs, in the order it got them."""
    risk = RiskEngine(TOPO.symbols, ACCOUNTS)
    matching = MatchingEngine(TOPO.symbols)
    risk_in, matching_in = [], []
    marks = {s: TOPO.symbols[s].initial_price for s in SYMBOLS}

    def to_risk(msg, now):
        risk_in.append((msg, now))
        queue = list(risk.handle(msg, now))
        while queue:
            dest, out = queue.pop(0)
            if dest == "matching":
                matching_in.append(out)
                for ev in matching.handle(out):
                    if type(ev).__name__ != "BookDelta":
                        risk_in.append((ev, now))
                        queue.extend(risk.handle(ev, now))

    for s in SYMBOLS:
        to_risk(IndexMark(symbol=s, index=marks[s], mark=marks[s], last=0, seq=0, ts_ns=0), 1)
    for ref, item in enumerate(script, 1):
        now = ref * 1_000_000
        kind = item[0]
        if kind == "place":
            _, account, s, side, qty, offset, tif = item
            to_risk(Routed(ref=ref, account=account, body=PlaceOrder(
                symbol=s, side=side, qty=qty, price=marks[s] + offset, tif=tif)), now)
        elif kind == "cancel":
            _, account, s, order_id = item
            to_risk(Routed(ref=ref, account=account, body=CancelOrder(symbol=s, order_id=order_id)),
                    now)
        elif kind == "mark":
            _, s, move = item
            marks[s] = max(1, marks[s] + move)
            to_risk(IndexMark(symbol=s, index=marks[s], mark=marks[s], last=0, seq=ref, ts_ns=now),
                    now)
            cmd = MarkPrice(symbol=s, mark=marks[s])
            matching_in.append(cmd)
            queue = [ev for ev in matching.handle(cmd) if type(ev).__name__ != "BookDelta"]
            for ev in queue:
                to_risk(ev, now)
        elif kind == "funding":
            _, s, rate = item
            to_risk(FundingRate(symbol=s, rate_e9=rate, mark=marks[s], ts_ns=now), now)
        else:
            _, account, s, leverage = item
            to_risk(Routed(ref=ref, account=account, body=SetLeverage(symbol=s, leverage=leverage)),
                    now)
    event(f"trades: {'yes' if any(type(m).__name__ == 'Trade' for m, _ in risk_in) else 'no'}")
    return risk_in, matching_in


def feed_risk(core, inputs):
    for msg, now in inputs:
        core.handle(msg, now)


def feed_matching(core, inputs):
    for msg in inputs:
        core.handle(msg)


@settings(max_examples=60, deadline=None)
@given(st.lists(step, min_size=5, max_size=80), st.data())
def test_snapshot_restore_then_replay_equals_replay_from_scratch(script, data):
    risk_in, matching_in = record_inputs(script)
    for make, feed, inputs in (
            (lambda: RiskEngine(TOPO.symbols, ACCOUNTS), feed_risk, risk_in),
            (lambda: MatchingEngine(TOPO.symbols), feed_matching, matching_in)):
        whole = make()
        feed(whole, inputs)
        cut = data.draw(st.integers(0, len(inputs)), label="snapshot after")
        first = make()
        feed(first, inputs[:cut])
        snapshot = first.snapshot()
        restored = make()  # a fresh process's core, then the snapshot's state
        restored.restore(snapshot)
        assert restored.state_hash() == first.state_hash()
        feed(restored, inputs[cut:])
        assert restored.state_hash() == whole.state_hash()
        feed(first, inputs[cut:])  # taking the snapshot changed nothing in the live core
        assert first.state_hash() == whole.state_hash()


def journaled_node(module, tmp_path, name):
    shell = RecordingShell(TOPO.nodes[name])
    shell.journal_path = str(tmp_path / name)
    module.build(shell, TOPO)
    return shell


@settings(max_examples=15, deadline=None)
@given(st.lists(step, min_size=5, max_size=60), st.integers(0, 3))
def test_a_node_rebuilt_from_its_journal_is_the_node_that_wrote_it(tmp_path_factory, script, snap):
    tmp = tmp_path_factory.mktemp("journal")
    risk_in, matching_in = record_inputs(script)
    originals = {}
    for name, module, inputs in (("risk", risk_service, risk_in),
                                 ("matching", matching_service, [(m, 0) for m in matching_in])):
        shell = journaled_node(module, tmp, name)
        runner_inbox = shell.inbox
        half = len(inputs) * snap // 4
        for i, (msg, now) in enumerate(inputs):
            if i == half and snap:
                shell.runner.snapshot(wait=True)  # mid-stream, as the node's timer takes it
            if isinstance(msg, (IndexMark, FundingRate)) and name == "risk":
                shell.runner.on_messages([msg])
            else:
                runner_inbox([msg])
        originals[name] = (shell.runner.core.state_hash(), list(shell.sent))
        shell.runner.close()
        again = journaled_node(module, tmp, name)
        assert again.runner.core.state_hash() == originals[name][0]
        assert again.sent == []  # what the replay would have said was said before
        again.runner.close()
