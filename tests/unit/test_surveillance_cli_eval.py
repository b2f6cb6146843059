"""`perpx surveillance top|explain` on a state the core wrote, their refusals; and the evaluation's
injectors on a short run (each injector's account is found, the clean run has no positives)."""

from __future__ import annotations

import json
import time

from cluster import cli
from perf.surveillance_eval import run
from perf.surveillance_sim import MS, Venue

S = "BTC-PERP"
MID = 300_000


def write_state(run_dir, now_ns: int) -> None:
    """What the node writes, from a real core: a spoofer among two market makers."""
    v = Venue()
    for rnd in range(8):
        t = now_ns + rnd * 500 * MS
        for mm in ("mm1", "mm2", "mm3", "mm4"):
            b = v.place(mm, 1, 10, MID - 10, t)
            a = v.place(mm, -1, 10, MID + 10, t)
            v.cancel(mm, b, t + 300 * MS)
            v.cancel(mm, a, t + 300 * MS)
        v.place("tk", 1 if rnd % 2 else -1, 2, 0, t + 100 * MS)
        big = v.place("spoof", 1, 200, MID - 60, t + 10 * MS)
        v.place("spoof", -1, 2, MID + 5, t + 10 * MS)
        v.place("tk", 1, 2, 0, t + 20 * MS)
        v.cancel("spoof", big, t + 40 * MS)
    end = now_ns + 4_000 * MS
    alerts = v.core.tick(end)
    where = run_dir / "surveillance"
    where.mkdir(parents=True)
    (where / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in alerts))
    (where / "state.json").write_text(json.dumps({
        "ts_ns": end, "events": v.core.features.events, "alerts": len(alerts),
        "queue": v.core.queue, "market": {},
        "features": [{"account": a, "symbol": s, "values": f}
                     for (a, s), f in v.core.features.values(end).items()]}))


def test_top_and_explain_read_the_nodes_files(tmp_path, capsys):
    write_state(tmp_path, time.time_ns() - 60 * 1_000_000_000)
    assert cli.main(["surveillance", "top", "--k", "3", "--run-dir", str(tmp_path), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert len(top["queue"]) == 3 and top["queue"][0]["account"] == "spoof"
    assert [a["account"] for a in top["alerts"]][0] == "spoof"
    assert cli.main(["surveillance", "top", "--since", "1s", "--run-dir", str(tmp_path),
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["alerts"] == []  # raised a minute ago
    assert cli.main(["surveillance", "explain", "spoof", "--run-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "spoof_milli" in text and "layer_milli" in text


def test_refusals_say_why(tmp_path, capsys):
    assert cli.main(["surveillance", "top", "--run-dir", str(tmp_path), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "no_surveillance"
    write_state(tmp_path, time.time_ns())
    assert cli.main(["surveillance", "explain", "nobody", "--run-dir", str(tmp_path),
                     "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "no_activity"
    assert cli.main(["surveillance", "top", "--k", "0", "--run-dir", str(tmp_path),
                     "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "out_of_range"  # the CLI's Number


def test_injectors_are_found_at_the_easy_level_and_clean_runs_have_no_positives():
    easy = run(7, "easy", 40)
    assert easy["positives"] == 11  # five injectors and a group of six clusterers
    assert easy["recall@20"] >= 0.8, easy["top20"]
    assert "x-spoofer" in easy["top20"][:10] and "x-stuffer" in easy["top20"][:10]
    clean = run(7, None, 20)
    assert clean["positives"] == 0 and clean["recall@10"] is None
    assert clean["precision@10"] == 0.0
