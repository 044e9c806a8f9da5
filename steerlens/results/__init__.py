"""Results from saved run files only (no torch): statistics, summary, answer text, findings,
figures, dashboard."""
