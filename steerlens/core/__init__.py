"""The engine: model loading, prompts to tokens, KV caches, activations, generation, steering
hooks, vectors and pure geometry."""
