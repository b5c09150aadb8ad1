"""Benchmarks of the gateway against Triton called directly (see README.md in this folder)."""
