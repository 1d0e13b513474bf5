"""Experiments of docs/results.md: each module trains (or reuses) its runs
through ``training.train_or_reuse``, summarizes them into a result type with
``to_json``/``from_json`` and prints its tables.  The scripts in scripts/
only parse flags into their settings."""
