"""Shared fixtures: a tiny random Qwen2 chat model with a locally trained tokenizer (no downloads)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The tests' own reuse store (model-level artefacts), never the user's.
os.environ["STEERLENS_REUSE_DIR"] = tempfile.mkdtemp(prefix="steerlens-reuse-")

CHATML = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# A Llama-2-style template whose end of instruction is plain text (no special token): the
# boundary between the user's message and the tail then rests on offsets, not on a special id.
INST = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<<SYS>>{{ m['content'] }}<</SYS>>\n"
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}{% if not loop.last %}<|im_end|>{% endif %}{% endif %}"
    "{% endfor %}"
)


def tiny_tokenizer(template: str = CHATML):
    """A byte-level BPE trained on the shipped prompts, with ChatML special tokens."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from steerlens.datasets.loaders import load_caa, load_instructions, load_jbb

    texts = [x.instruction for x in load_instructions("harmful_train")[:100]]
    texts += [x.instruction for x in load_instructions("harmless_train")[:100]]
    texts += [b.goal for b in load_jbb("harmful")] + [i.question for i in load_caa("refusal")[:50]]
    texts += ["(A) (B) A B Sure, here is I'm sorry I cannot As an AI"]
    bpe = ByteLevelBPETokenizer()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(texts, vocab_size=600, min_frequency=2, special_tokens=special,
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", padding_side="left")
    tok.chat_template = template
    return tok


def cached_model_dir(tmp_path, monkeypatch, config: str, key: str = "smollm2-135m-instruct"):
    """An embedded model's converted-cache folder under a fresh $STEERLENS_CACHE, holding only
    `config.json` (the tests add what a half-written or corrupt conversion leaves)."""
    monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path))
    d = tmp_path / "models" / key
    d.mkdir(parents=True)
    (d / "config.json").write_text(config)
    return d


def seeded_vector(seed: int, norm: float, d_model: int = 64) -> torch.Tensor:
    """A random direction of the tiny model's width (seeded) at the given norm."""
    v = torch.randn(d_model, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * norm


def save_tiny_model(path, family: str = "qwen2", seed: int = 0, n_layers: int = 4) -> str:
    """Write a tiny random HF model of a family plus the tiny tokenizer to `path`."""
    import transformers as tf

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                  num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=2048, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    cfgs = {
        "qwen2": lambda: tf.Qwen2Config(**common),
        "llama": lambda: tf.LlamaConfig(**common),
        "mistral": lambda: tf.MistralConfig(**common, sliding_window=None),
        "gemma2": lambda: tf.Gemma2Config(**common, head_dim=16, sliding_window=64,
                                          query_pre_attn_scalar=16),
    }
    cfg = cfgs[family]()
    model = tf.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # random init is small; scale up so hooks make visible changes
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from steerlens.core.models import load_model

    torch.set_grad_enabled(False)
    return load_model(tiny_model_dir, device="cpu")


def planted_model(model_dir, j: int):
    """The tiny model edited so that (1) block 1 writes nothing (the residual after it is its
    input) and (2) no later block writes coordinate `j`: a vector added at layer 1 changes the
    j-component at layers 2-3 by exactly its own j-part, and everything else only through it."""
    from steerlens.core.models import load_model

    torch.set_grad_enabled(False)  # as the tiny_model fixture: in-place edits of the weights
    model = load_model(model_dir, device="cpu")
    layers = model.original_model.model.layers
    layers[1].self_attn.o_proj.weight.zero_()
    layers[1].mlp.down_proj.weight.zero_()
    for i in (2, 3):
        layers[i].self_attn.o_proj.weight[j].zero_()
        layers[i].mlp.down_proj.weight[j].zero_()
    return model


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded 0.5B (skipped when its packages are not installed)."""
    from steerlens.core.models import load_model
    from steerlens.errors import ModelError

    torch.set_grad_enabled(False)
    try:
        return load_model("qwen2.5-coder-0.5b-instruct", device="cpu")
    except ModelError as e:
        pytest.skip(f"embedded model unavailable: {e}")


def _flag_groups(argv) -> list[list[str]]:
    out: list[list[str]] = []
    for a in argv:
        if a.startswith("--"):
            out.append([a])
        else:
            out[-1].append(a)
    return out


def audit_args(model_dir, out, *extra):
    """A small audit on the tiny model: 2 behaviours x 2 attacks x 4 goals, 4 new tokens.
    The random model never refuses, so Arditi's filter is off and every layer is a candidate.
    A flag in `extra` replaces the same flag of these (the CLI takes each option once)."""
    given = _flag_groups(extra)
    flags = {g[0] for g in given}
    base = [a for g in _flag_groups(_base_args(model_dir, out)) if g[0] not in flags for a in g]
    return base + [a for g in given for a in g]


def _base_args(model_dir, out):
    return ["--model", model_dir, "--out", str(out), "--behaviours", "sycophancy", "refusal",
            "--attacks", "none", "refusal_suppression", "--doses", "2", "--dose-sweep", "-2", "2",
            "--n-goals", "4", "--n-benign", "2", "--max-new-tokens", "4", "--device", "cpu",
            "--n-caa-items", "4", "--n-null-screen", "4", "--n-null-generate", "2",
            "--n-refusal-train", "8", "--n-refusal-val", "4", "--no-refusal-filter",
            "--refusal-layer-stride", "1", "--batch-size", "4", "--no-harm-judge"]


@pytest.fixture(scope="session")
def finished_run(tiny_model_dir, tmp_path_factory):
    from steerlens.audit.run import main

    out = tmp_path_factory.mktemp("run") / "a"
    assert main(audit_args(tiny_model_dir, out)) == 0
    return out
