"""Benchmarking: sweeps, latency and memory measurement, result records, tables and plots."""
