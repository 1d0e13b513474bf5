"""Reading runs back: a run's trajectory and its summaries (``trajectory``),
Markdown table cells (``tables``) and matplotlib figures (``plotting``)."""
