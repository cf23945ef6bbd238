"""Tables of params x metrics, summaries across seeds, the report. Knows nothing of scheduling."""
