"""Benchmarks for the quality bars of DESIGN §8 (measured here, never in timed tests).

``make bench`` (``python -m bench``) runs them on the local stack and prints one table; each also runs on
its own (``python -m bench.ingest``) and writes its figures to ``bench/results/<name>.json``.
"""
