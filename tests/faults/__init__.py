"""The fault-injection group (``pytest -m faults``): real servers of its own, killed mid-loop.

See docs/operations.md, "Outages".
"""
