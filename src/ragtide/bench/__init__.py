"""Benchmarks behind ``ragtide bench``: quality, ingestion and server measurements.

Results are JSON files (default ``bench/results/``); the README summarises them.
Timings are measured here and only here, never asserted in tests.
"""
