"""Direction-finding methods: CAA steering vectors, the other extraction methods over the same pair
activations (extraction.METHODS), Arditi's refusal direction, the refusal subspace."""
