"""The venue's rules shared by several nodes and tools, pure (stdlib + msgspec only).

A rule lives here (or in cluster/ladder.py, prices.py, funding.py, units.py) once, never copied.
"""
