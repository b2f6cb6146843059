"""`perpx audit verify RUN_DIR`: replay every journal of a run offline and say whether it holds.

Per journaled node (risk, matching), read-only (a torn tail is reported, never cut):
- replay from the oldest point the journal still has (the start, or the oldest snapshot kept when
  earlier segments were pruned) to the end, through the node's own input handling;
- at every snapshot on the way, the replayed state must hash to what the snapshot holds;
- from every snapshot, replaying the rest must reach the same final state hash;
- risk's money must be conserved at the end.
A difference names the first input where two replays disagree. Damage (a bad checksum, a gap)
names the file, the byte offset and the input sequence number.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from cluster import config
from cluster.core import load_state
from cluster.journal import (
    SEG_PREFIX, SEG_SUFFIX, SNAP_PREFIX, SNAP_SUFFIX, JournalCorrupt, read_frames, read_snapshot,
    torn_tail,
)
from cluster.protocol import JournalInbound, LinkSeq
from cluster.recording import RecordingShell

JOURNALED = config.JOURNALED_NODES
TOPOLOGY_COPY = "topology.toml"  # the run's topology, beside its journals (the supervisor writes it)
LOCKSTEP_LIMIT = 200_000  # inputs compared one by one to find where two replays part


class QuietShell(RecordingShell):
    """A recording shell that keeps nothing: an offline replay's effects go nowhere, and its
    inputs are the journal's only."""

    offline = True

    def send(self, peer: str, message) -> None:
        pass

    publish = send

    def record(self, explanation) -> None:
        pass


def _replayer(node: str, topo):
    """(core, process) of `node` as its service builds them, journal off."""
    module = __import__(f"nodes.{node}.service", fromlist=["build"])
    shell = QuietShell(topo.nodes[node])
    module.build(shell, topo)
    return shell.runner.core, shell.runner.process


def _apply(process, frame, decode) -> None:
    msg = decode(frame.payload)
    if type(msg) is not LinkSeq:
        process(msg, frame.ts_ns)


def _snapshots(directory: Path) -> list[tuple[int, Path]]:
    return sorted((int(p.name[len(SNAP_PREFIX):-len(SNAP_SUFFIX)]), p)
                  for p in directory.glob(f"{SNAP_PREFIX}*{SNAP_SUFFIX}"))


def _restored(node: str, topo, path: Path):
    frame = read_snapshot(path)
    core, process = _replayer(node, topo)
    core.restore(load_state(frame.payload)["core"])
    return core, process


def _start(node: str, directory: Path, topo, upto: int | None = None):
    """(start seq, core, process) for a replay of `directory`: from the beginning when its first
    segment is there, else from the latest snapshot at or before `upto` (None: the earliest)."""
    snaps = _snapshots(directory)
    segments = sorted(directory.glob(f"{SEG_PREFIX}*{SEG_SUFFIX}"))
    first_seg = int(segments[0].name[len(SEG_PREFIX):-len(SEG_SUFFIX)]) if segments else None
    if first_seg == 1 or (first_seg is None and not snaps):
        return 0, *_replayer(node, topo)
    usable = [(seq, path) for seq, path in snaps
              if (first_seg is None or seq + 1 >= first_seg) and (upto is None or seq <= upto)]
    if not usable:
        return None, None, None
    seq, path = usable[0] if upto is None else usable[-1]
    return seq, *_restored(node, topo, path)


def _last_input(directory: Path) -> int:
    last = max([seq for seq, _ in _snapshots(directory)], default=0)
    for frame in read_frames(directory, last):
        last = frame.seq
    return last


def verify_pair(node: str, primary: Path, standby: Path, topo) -> dict:
    """A core and its hot standby (cluster/failover.py): both journals replayed to the last input
    both have must give one state hash, and the frames both hold must be the same inputs."""
    report: dict = {"node": node, "instances": [primary.name, standby.name], "ok": False}
    try:
        upto = min(_last_input(primary), _last_input(standby))
        decode = msgspec.msgpack.Decoder(JournalInbound).decode
        hashes, frames = [], []
        for directory in (primary, standby):
            start, core, process = _start(node, directory, topo, upto)
            if core is None:
                report["error"] = f"{directory.name} cannot be replayed to input {upto}"
                return report
            held = {}
            for frame in read_frames(directory, start):
                if frame.seq > upto:
                    break
                _apply(process, frame, decode)
                held[frame.seq] = (frame.ts_ns, frame.payload)
            hashes.append(core.state_hash())
            frames.append(held)
        common = sorted(set(frames[0]) & set(frames[1]))
        differ = [seq for seq in common if frames[0][seq] != frames[1][seq]]
        report.update(common_input=upto, state_hashes=hashes, equal=hashes[0] == hashes[1],
                      frames_compared=len(common), frames_differing=len(differ),
                      first_differing_input=differ[0] if differ else None)
        report["ok"] = report["equal"] and not differ
    except JournalCorrupt as exc:
        report["error"] = str(exc)
    return report


def verify_node(node: str, directory: Path, topo, label: str | None = None) -> dict:
    decode = msgspec.msgpack.Decoder(JournalInbound).decode
    report: dict = {"node": label or node, "journal": str(directory), "ok": False}
    try:
        snaps = _snapshots(directory)
        segments = sorted(directory.glob(f"{SEG_PREFIX}*{SEG_SUFFIX}"))
        first_seg = int(segments[0].name[len(SEG_PREFIX):-len(SEG_SUFFIX)]) if segments else 1
        tail = torn_tail(directory)
        report["torn_tail_bytes"] = tail.cut_bytes if tail is not None else 0
        # Where a whole replay can start: the beginning, if the first segment is still there.
        if first_seg == 1:
            start_seq, (core, process) = 0, _replayer(node, topo)
            report["from"] = "start"
        elif snaps and snaps[0][0] + 1 >= first_seg:
            start_seq = snaps[0][0]
            core, process = _restored(node, topo, snaps[0][1])
            report["from"] = f"snapshot {start_seq} (earlier segments pruned)"
        else:
            report["error"] = f"the journal starts at input {first_seg} and no snapshot covers it"
            return report
        checked, replayed, last = [], 0, start_seq
        pending = [(seq, path) for seq, path in snaps if seq > start_seq]
        for frame in read_frames(directory, start_seq):
            while pending and pending[0][0] < frame.seq:
                seq, path = pending.pop(0)
                checked.append(_check_snapshot(node, topo, core, seq, path))
            _apply(process, frame, decode)
            replayed += 1
            last = frame.seq
        for seq, path in pending:
            if seq == last:
                checked.append(_check_snapshot(node, topo, core, seq, path))
        report.update(inputs_replayed=replayed, last_input=last, snapshots_checked=len(checked),
                      state_hash=core.state_hash())
        if node == "risk":
            held, owed = core.conservation()
            report["money"] = {"held": held, "owed": owed, "conserved": held == owed}
        divergent = [c for c in checked if not c["equal"]]
        # From each snapshot to the end must land on the same state.
        ends = []
        for seq, path in snaps:
            if seq < start_seq:
                continue
            other, other_process = _restored(node, topo, path)
            for frame in read_frames(directory, seq):
                _apply(other_process, frame, decode)
            end = {"from_snapshot": seq, "state_hash": other.state_hash(),
                   "equal": other.state_hash() == report["state_hash"]}
            if not end["equal"]:
                end["first_difference"] = _lockstep(node, topo, directory, start_seq, snaps[0],
                                                    seq, path)
            ends.append(end)
        report["replays_from_snapshots"] = ends
        if divergent:
            report["divergence"] = _first_divergence(node, topo, directory, start_seq, snaps, divergent[0])
        report["ok"] = (not divergent and all(e["equal"] for e in ends)
                        and report.get("money", {}).get("conserved", True))
    except JournalCorrupt as exc:
        report["error"] = str(exc)
        report["damage"] = {"file": exc.path.name, "offset": exc.offset, "seq": exc.seq,
                            "reason": exc.reason}
    return report


def _check_snapshot(node, topo, core, seq: int, path: Path) -> dict:
    snap_core, _ = _restored(node, topo, path)
    return {"snapshot": seq, "equal": snap_core.state_hash() == core.state_hash(),
            "replayed_hash": core.state_hash(), "snapshot_hash": snap_core.state_hash()}


def _first_divergence(node, topo, directory, start_seq, snaps, bad: dict) -> dict:
    """A snapshot that is not the replay of the inputs before it: it holds only its end state,
    so what is known is the span since the last point both agreed on."""
    earlier = [s for s, _ in snaps if start_seq <= s < bad["snapshot"] and s != start_seq]
    after = earlier[-1] if earlier else start_seq
    return {"between_inputs": [after + 1, bad["snapshot"]],
            "note": f"the snapshot after input {bad['snapshot']} is not what replaying the inputs "
                    f"before it gives"}


def _lockstep(node, topo, directory, start_seq, first_snap, seq: int, path: Path) -> dict:
    """Two replays that end apart: the whole one, brought to `seq`, and the one restored from the
    snapshot at `seq`, stepped together; the first input after which their states differ."""
    decode = msgspec.msgpack.Decoder(JournalInbound).decode
    if start_seq == 0:
        a, a_process = _replayer(node, topo)
    else:
        a, a_process = _restored(node, topo, first_snap[1])
    b, b_process = _restored(node, topo, path)
    frames = read_frames(directory, start_seq)
    for frame in frames:
        if frame.seq > seq:
            _apply(a_process, frame, decode)
            _apply(b_process, frame, decode)
            if a.state_hash() != b.state_hash():
                return {"input_seq": frame.seq, "type": type(decode(frame.payload)).__name__}
            if frame.seq - seq >= LOCKSTEP_LIMIT:
                break
        else:
            _apply(a_process, frame, decode)
    return {"input_seq": None, "note": f"no difference within {LOCKSTEP_LIMIT} inputs"}


def verify(run_dir: str | Path) -> dict:
    run = Path(run_dir)
    copy = run / "journal" / TOPOLOGY_COPY
    if not copy.exists():
        return {"run_dir": str(run), "ok": False,
                "error": f"no journal in {run} (expected {copy}, written by `perpx cluster up`)"}
    topo = config.load(copy, run_dir=str(run))
    nodes = [verify_node(node, run / "journal" / instance, topo, label=instance)
             for node in JOURNALED for instance in (node, f"{node}.b")
             if (run / "journal" / instance).is_dir()]
    pairs = [verify_pair(node, run / "journal" / node, run / "journal" / f"{node}.b", topo)
             for node in JOURNALED if (run / "journal" / f"{node}.b").is_dir()
             and (run / "journal" / node).is_dir()]
    return {"run_dir": str(run), "ok": bool(nodes) and all(n["ok"] for n in nodes + pairs),
            "nodes": nodes, "pairs": pairs}


def text(result: dict) -> str:
    """The terminal form: one block per node."""
    lines = [f"run {result['run_dir']}: {'consistent' if result['ok'] else 'NOT CONSISTENT'}"]
    if "error" in result:
        lines.append(f"  {result['error']}")
    for n in result.get("nodes", []):
        lines.append(f"{n['node']}: {'ok' if n['ok'] else 'FAILED'}")
        if "error" in n:
            lines.append(f"  {n['error']}")
            continue
        lines.append(f"  replayed {n['inputs_replayed']:,} inputs from {n['from']} to input "
                     f"{n['last_input']:,}; snapshots checked {n['snapshots_checked']}; "
                     f"replays from snapshots {len(n['replays_from_snapshots'])}"
                     + (f"; torn tail {n['torn_tail_bytes']} bytes (cut when the node opens it)"
                        if n["torn_tail_bytes"] else ""))
        lines.append(f"  final state hash {n['state_hash']}")
        if "money" in n:
            m = n["money"]
            lines.append(f"  money {'conserved' if m['conserved'] else 'NOT conserved'}: "
                         f"held {m['held']:,} atoms, owed {m['owed']:,}")
        for end in n["replays_from_snapshots"]:
            if not end["equal"]:
                lines.append(f"  from snapshot {end['from_snapshot']}: different end state, "
                             f"first difference {end.get('first_difference')}")
        if "divergence" in n:
            lines.append(f"  divergence: {n['divergence']}")
    for p in result.get("pairs", []):
        if "error" in p:
            lines.append(f"{p['node']} pair: FAILED  {p['error']}")
            continue
        lines.append(f"{p['node']} pair ({' + '.join(p['instances'])}): "
                     f"{'ok' if p['ok'] else 'FAILED'}  at input {p['common_input']:,} both replay "
                     f"to {'the same state' if p['equal'] else 'DIFFERENT states'}; "
                     f"{p['frames_compared']:,} inputs compared, {p['frames_differing']} differ")
    return "\n".join(lines)
