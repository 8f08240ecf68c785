"""Layer analysis: contribution hooks, per-layer statistics, and their tables and plots."""
