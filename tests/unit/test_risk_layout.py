"""The risk core's layout (nodes/risk/ledger.py assembles one class per job over one state): each
method is defined in exactly one of those modules. A method defined twice (say, pasted back into
ledger.py in a merge while its module still has it) would silently shadow the other copy."""

from __future__ import annotations

import inspect

from nodes.risk.ledger import RiskEngine

JOBS = {"state", "margin", "reservations", "replies", "admission", "account_ops", "oracle_inputs",
        "order_events", "settlement", "liquidation", "views", "ledger"}


def own_classes():
    return [c for c in RiskEngine.__mro__ if c.__module__.startswith("nodes.risk.")]


def test_each_job_is_one_class_in_its_own_module():
    modules = [c.__module__.rsplit(".", 1)[1] for c in own_classes()]
    assert sorted(modules) == sorted(JOBS)


def test_no_method_is_defined_in_two_places():
    where: dict[str, list[str]] = {}
    for cls in own_classes():
        for name, value in vars(cls).items():
            if inspect.isfunction(value) or isinstance(value, (property, staticmethod)):
                where.setdefault(name, []).append(cls.__module__)
    assert not {n: m for n, m in where.items() if len(m) > 1}
