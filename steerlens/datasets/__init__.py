"""Dataset loaders (JBB, Arditi splits, CAA A/B sets), attack templates and JBB attack artifacts."""
