"""Benchmarks: `python -m bench.quality|serving|reliability`; results under bench/results/ (Markdown + JSON)."""
