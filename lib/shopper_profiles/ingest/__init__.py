"""Ingestion, the pipeline's first stage: raw sources (simulator, Online Retail, Amazon Beauty)
land as strings, are validated, quarantined, deduplicated and pseudonymised into bronze."""
