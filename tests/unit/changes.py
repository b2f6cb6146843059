"""A different value of the same kind, for tests that change one piece of state at a time and
check that a state hash sees it."""

from __future__ import annotations


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, dict):  # one entry fewer (or one more, when empty)
        return dict(list(value.items())[:-1]) if value else {"ZZZ": "cross"}
    if hasattr(value, "append"):  # a deque or list of history
        copy = type(value)(value, maxlen=value.maxlen) if hasattr(value, "maxlen") else list(value)
        copy.append(copy[-1] if copy else 1)
        return copy
    raise AssertionError(f"no way to change {value!r}")
