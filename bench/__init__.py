"""Benchmarks: each module here (not starting with `_`) is a script that prints its figures
next to a baseline measured in the same run. `python -m bench [--quick]` runs them all."""
