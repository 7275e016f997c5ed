"""Benchmarks: run with the project's venv, e.g. ``.venv/bin/python -m bench.edge --json``."""
