"""Benchmarks and the loopback mock provider fleet (see README)."""
