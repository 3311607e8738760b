"""spanpool's benchmarks: its pools side by side with the official client's, on LocalSpanner.

``spanpool bench`` runs them from the installed package; each module also runs on its own,
e.g. ``python -m spanpool.bench.pools --quick``.
"""
