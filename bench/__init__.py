"""Benchmarks (never timed tests); each file runs as a script: `python bench/NAME.py`.
A package so that the import contracts in pyproject.toml cover it."""
