"""Direction-finding methods: CAA steering vectors, Arditi's refusal direction, the refusal subspace."""
