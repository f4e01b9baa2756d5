"""The red-team cases `python -m bench.redteam` plays against a real hushd, one module per
category: protocol, documents (files.py makes the hostile bytes), policies, resources, load.
What they share: verdicts.py (how a case is judged), wire.py (raw sockets) and harness.py (the
lab: temporary directories, daemon processes, samplers, children run as another user).
"""
