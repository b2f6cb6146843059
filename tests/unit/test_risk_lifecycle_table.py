"""The order lifecycle's table (nodes/risk/order_events.py) names what the code does: every
transition it names is a method of the risk core, and every order event matching sends has one."""

from __future__ import annotations

import re

import msgspec

from cluster import protocol
from nodes.risk import order_events
from nodes.risk.ledger import RiskEngine


def test_every_function_the_table_names_exists():
    named = set(re.findall(r"\b(_[a-z_]+)\b", order_events.__doc__))
    assert named and not [n for n in sorted(named) if not hasattr(RiskEngine, n)]


def test_every_order_event_has_a_transition_and_a_row():
    """Matching's events that carry an order id (or a list of them) are all routed."""
    events = {cls for cls in vars(protocol).values()
              if isinstance(cls, type) and issubclass(cls, msgspec.Struct)
              and cls.__name__.startswith("Order")
              and {"account", "seq"} <= set(cls.__struct_fields__)}
    assert events == set(order_events.ORDER_EVENTS), events ^ set(order_events.ORDER_EVENTS)
    for cls, transition in order_events.ORDER_EVENTS.items():
        row = rf"^    {cls.__name__} .* {transition.__name__}\b"
        assert re.search(row, order_events.__doc__, re.M), cls.__name__
