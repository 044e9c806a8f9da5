"""Dataset loaders (JBB, Arditi splits, CAA A/B sets, the behaviour sets of behaviours.py), attack
templates and JBB attack artifacts."""
