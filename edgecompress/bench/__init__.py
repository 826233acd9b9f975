"""Benchmarking on devices: harness (push agent + model, run, parse), stats, budgets, reports, CLI commands."""
