"""The fuzz's journal check (#20): what the cores journaled while hostile frames flew, by source;
anything a client or a stray frame could have put there is named as foreign."""

from types import SimpleNamespace

import msgspec

from cluster.journal import Journal
from cluster.protocol import ClockTick, GetAccount, IndexMark, LinkSeq, PlaceOrder, Routed
from perf.fuzz import core_inputs_during

TOPO = SimpleNamespace(instances=lambda node: (node,))


def journal(tmp_path, node: str, items: list[tuple[int, object]]) -> None:
    j = Journal(tmp_path / "journal" / node, fsync="off")
    encode = msgspec.msgpack.Encoder().encode
    j.append_batch([(ts, encode(msg)) for ts, msg in items])
    j.close()


def test_the_venue_s_own_inputs_pass_and_a_client_s_or_a_stray_one_is_foreign(tmp_path):
    mark = IndexMark(symbol="BTC-PERP", index=1, mark=1, last=1, seq=1, ts_ns=1)
    order = PlaceOrder(req_id=1, symbol="BTC-PERP", side=1, qty=1, price=1)
    journal(tmp_path, "risk", [
        (5, Routed(ref=1, account="a", body=GetAccount())),  # before the window: not counted
        (10, ClockTick()), (11, mark),
        (12, LinkSeq(link="gateway->risk", first=7, count=1)),  # a header: not an input itself
        (12, Routed(ref=2, account="a", body=order)),
        (13, Routed(ref=3, account="b", body=order)),  # from the inbox with no link: a stray
        (30, ClockTick()),  # after the window
    ])
    journal(tmp_path, "matching", [(10, mark), (11, ClockTick())])
    found = core_inputs_during(tmp_path, TOPO, [(10, 20)])
    assert found["matching"] == {"inputs": 2, "by_source": {
        "unsequenced: IndexMark": 1, "unsequenced: ClockTick": 1}, "foreign": [],
        "foreign_count": 0}
    risk = found["risk"]
    assert risk["inputs"] == 4 and risk["foreign_count"] == 2, risk
    assert risk["by_source"]["gateway->risk: Routed PlaceOrder (a)"] == 1
    assert [f.split(" ", 2)[2] for f in risk["foreign"]] == [
        "gateway->risk: Routed PlaceOrder (a)", "unsequenced: Routed PlaceOrder (b)"]
    # two windows: the second sees only what is in it
    assert core_inputs_during(tmp_path, TOPO, [(0, 0), (30, 30)])["risk"]["inputs"] == 1
