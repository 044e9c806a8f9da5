from steerlens.core.memory import auto_batch_size, available_bytes, bytes_per_sequence


def test_batch_size_shrinks_with_memory_and_length(tiny_model):
    big = auto_batch_size(tiny_model, 256, cap=1000, available=8 << 30)
    small = auto_batch_size(tiny_model, 256, cap=1000, available=8 << 20)
    longer = auto_batch_size(tiny_model, 2048, cap=1000, available=8 << 30)
    assert big > small >= 1 and big > longer
    assert auto_batch_size(tiny_model, 256, cap=16, available=8 << 30) == 16
    assert available_bytes("cpu") > 0


def test_budget_for_15b_fits_24gb():
    """The 1.5B (28 layers, d_model 1536, 2 KV heads, vocab 151936) at 600 tokens in fp32."""
    class Cfg:
        d_model, n_heads, n_key_value_heads, n_layers, d_mlp, d_vocab = 1536, 12, 2, 28, 8960, 151936
    per = bytes_per_sequence(Cfg, 600)
    weights = 1.54e9 * 4
    free = 24e9 - weights - 2e9  # weights plus a margin for the process
    batch = int(free * 0.5) // per
    assert batch >= 8, batch
