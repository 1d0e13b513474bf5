"""The experiments of docs/results.md as library modules, one per
experiment: its settings, how it trains (or reuses, or continues) its runs,
its summaries over seeds and its tables (returned as Markdown strings).
``step_length`` and ``nsgd_table`` return a result type with
``to_json``/``from_json``; ``phase`` keeps its runs in a
``RunStore`` (runs.jsonl).  The commands in ``tf_sharpness.cli`` only turn
flags into settings, print and plot."""
