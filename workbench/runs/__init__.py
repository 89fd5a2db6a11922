"""Runs: the run store, notebook sweeps, and the report."""
