"""Searching for the model a goal asks for (compress optimize): above benchmarking, below the CLI."""
