"""Scoring a model on a task's dev data: predictions, metrics and their standard errors."""
