"""A snapshot written before #18 moved the rule modules names its classes by the old paths
(cluster.ladder, nodes.risk.adl, ...): it still restores, to the classes where they live now."""

import pickle

import pytest

from cluster.core import MOVED_MODULES, load_state
from cluster.rules.ladder import Tier

TIER = Tier(number=3, floor=1, cap=2, max_leverage=20, mmr_ppm=10_000, amount=5)


def written_before_the_move() -> bytes:
    # protocol 2 names a class as "module\nname\n": the old path written where the new one is
    data = pickle.dumps({"tiers": [TIER]}, protocol=2)
    assert b"cluster.rules.ladder\n" in data
    return data.replace(b"cluster.rules.ladder\n", b"cluster.ladder\n")


def test_a_snapshot_naming_the_old_module_paths_restores():
    data = written_before_the_move()
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(data)  # what the plain unpickler did: the run could not recover
    assert load_state(data) == {"tiers": [TIER]}
    assert MOVED_MODULES["nodes.risk.adl"] == "cluster.rules.adl"


def test_a_moved_class_restores_from_its_old_module_path():
    from nodes.risk.state import LiqExec
    assert MOVED_MODULES.get("nodes.risk.ledger") is None  # (the module stays; the class moved)
    data = pickle.dumps(LiqExec, protocol=2).replace(b"nodes.risk.state\n", b"nodes.risk.ledger\n")
    assert b"nodes.risk.ledger\nLiqExec" in data
    assert load_state(data) is LiqExec
