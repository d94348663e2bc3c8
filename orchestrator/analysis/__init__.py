"""Readers of the tables: statistics, figures, reports, comparisons, history, and the
`results` verb's summaries. Reads run directories only, through `orchestrator.store`."""
