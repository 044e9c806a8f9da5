"""Model-level artefacts, computed once and reused by every later run that would compute exactly
the same thing: the refusal direction (with the dose unit), the subspace, the grid's cells that
no audited vector touches (baseline, random-direction nulls, refusal validation, benign
baseline) and each cell's harm judgement.

An entry is content-addressed: its key hashes everything that determines its bytes (the
model's weights and tokenizer, the data files it reads, the config fields it reads, the
sha256 of the artefacts it is computed from, steerlens' source, torch/transformers/
TransformerLens versions, device, dtype, batch size). A run copies an entry's files into its
own directory byte for byte, and records in reuse.json what it reused under which key.
`--no-reuse` neither reads nor writes the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from steerlens.audit.config import AuditConfig
from steerlens.rundir import RunStore, atomic_save_tensor
from steerlens.schema import REFUSAL_FILE, REFUSAL_TENSORS, REUSE_FILE, SUBSPACE_FILE, SUBSPACE_TENSORS

REUSE_ENV = "STEERLENS_REUSE_DIR"


def reuse_dir() -> Path:
    """`$STEERLENS_REUSE_DIR`, else `reuse/` under steerlens' cache directory."""
    from steerlens.core.models import cache_dir

    env = os.environ.get(REUSE_ENV)
    return Path(env).expanduser() if env else cache_dir() / "reuse"


def digest(obj) -> str:
    """sha256 of an object's canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_digest(model) -> str:
    """sha256 over the model's distinct tensors (name, dtype, shape, bytes); tied weights and
    the bridge's aliases count once. Memoised on the model (1.5 s for the 0.5B in fp32)."""
    got = getattr(model, "steerlens_weights_sha256", None)
    if got:
        return got
    hf = getattr(model, "original_model", model)
    h, seen = hashlib.sha256(), set()
    for name, t in sorted(hf.state_dict().items()):
        k = (t.data_ptr(), t.nbytes, t.dtype)
        if k in seen:
            continue
        seen.add(k)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    model.steerlens_weights_sha256 = h.hexdigest()
    return model.steerlens_weights_sha256


def tokenizer_digest(tokenizer) -> str:
    """sha256 of the whole tokenizer: its serialised fast tokenizer (vocabulary, merges,
    normaliser, pre-tokenizer, decoder), chat template, special tokens, padding and decoding
    options."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return digest({"backend": backend.to_str() if backend is not None
                   else sorted(tokenizer.get_vocab().items()),
                   "template": tokenizer.chat_template, "special": tokenizer.special_tokens_map,
                   "pad": tokenizer.pad_token_id, "side": tokenizer.padding_side,
                   "clean_up": getattr(tokenizer, "clean_up_tokenization_spaces", None)})


@cache
def source_digest() -> str:
    """sha256 of steerlens' own Python source (a code change invalidates every entry)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import platform
    from importlib.metadata import version

    names = ("torch", "transformers", "transformer-lens", "tokenizers", "safetensors",
             "scikit-learn", "numpy", "scipy", "jinja2")
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def _hardware(device: str) -> dict:
    """What moves float rounding besides versions: the device's name and the thread count."""
    name = platform_processor()
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
    return {"device": device, "device_name": name, "threads": torch.get_num_threads()}


def platform_processor() -> str:
    import platform

    return f"{platform.machine()} {platform.processor()}".strip()


def environment(model, device: str, dtype: str) -> dict:
    """What every entry's floats rest on, besides its own inputs: the model (name, weights,
    config, tokenizer), steerlens' source, library versions, device, dtype, threads."""
    from steerlens._version import __version__

    config = getattr(getattr(model, "original_model", None), "config", None)
    return {"steerlens": __version__, "source": source_digest(), **_versions(),
            **_hardware(device), "dtype": dtype,
            "model": getattr(model, "steerlens_name", None), "weights": weights_digest(model),
            "model_config": digest(config.to_dict()) if config is not None else None,
            "tokenizer": tokenizer_digest(model.tokenizer),
            "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model}


def data_digests(*relative: str) -> dict[str, str]:
    """sha256 of the named data files (paths relative to the data directory)."""
    from steerlens.datasets.loaders import data_dir

    return {r: file_digest(data_dir() / r) for r in relative}


# -- what each model-level artefact's key covers (the grid's cells: `grid.block_inputs`) ----

REFUSAL_FILES = [REFUSAL_TENSORS, REFUSAL_FILE]
SUBSPACE_FILES = [SUBSPACE_TENSORS, SUBSPACE_FILE]
_REFUSAL_FIELDS = ("layer", "n_refusal_train", "n_refusal_val", "refusal_layer_stride",
                   "refusal_positions", "filter_refusal_prompts", "seed", "system", "batch_size")


def refusal_inputs(cfg: AuditConfig) -> dict:
    """What the refusal direction (and the resid dose unit with it) depends on beyond the
    model and the environment: the config fields it reads and its four data splits."""
    splits = [f"refusal_direction/splits/{n}.json"
              for n in ("harmful_train", "harmless_train", "harmful_val", "harmless_val")]
    return {"config": {f: getattr(cfg, f) for f in _REFUSAL_FIELDS},
            "data": data_digests(*splits)}


def subspace_inputs(cfg: AuditConfig, store: RunStore) -> dict:
    """The subspace's: its config fields, StrongREJECT when the category method runs, and
    the refusal direction it is computed from (its file's sha256)."""
    # the category method reads StrongREJECT, less the prompts that overlap JBB goals
    data = (["refusal_direction/raw/strongreject.csv", "jbb_behaviors/harmful-behaviors.csv"]
            if cfg.n_category > 0 else [])
    return {"config": {f: getattr(cfg, f) for f in ("n_category", "k", "seed", "system",
                                                    "batch_size")},
            "data": data_digests(*data),
            "refusal": file_digest(store.path(REFUSAL_TENSORS))}


def reused(store: RunStore, reuse, name: str, inputs, files: list[str], compute):
    """`compute()` with the artefact's files first provided from the reuse store (when it
    holds them) and published to it afterwards; no store: just `compute()`."""
    if reuse is None:
        return compute()
    inputs = inputs()
    key = reuse.key(name, inputs)
    reuse.provide(store, name, key, files)
    value = compute()
    reuse.publish(store, key, files, inputs)
    return value



def open_reuse(model, device: str, dtype: str, enabled: bool = True) -> Reuse:
    """The run's view of the store (`enabled=False`: `--no-reuse`, nothing read or written)."""
    if not enabled:
        return Reuse(None, {})
    return Reuse(reuse_dir(), environment(model, device, dtype))


@dataclass
class Reuse:
    """The store of model-level entries for one run, and the record of what it reused."""

    root: Path | None  # None: --no-reuse
    env: dict
    records: dict = field(default_factory=dict)
    _fresh: dict = field(default_factory=dict, repr=False)

    def key(self, kind: str, inputs: dict) -> str:
        return digest({"kind": kind, "env": self.env, "inputs": inputs})

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def provide(self, store: RunStore, name: str, key: str, files: list[str]) -> bool:
        """Copy an entry's files into the run directory when the entry exists and none of them
        is there yet (a resumed run that has any of them computes the rest itself, never
        mixing sources). True if the entry was used. Records the artefact in reuse.json."""
        if self.root is None:
            return False
        entry = self._entry(key)
        fresh = not any(store.exists(f) for f in files)
        hit = fresh and (entry / "inputs.json").is_file()
        if hit:
            for f in files:
                atomic_save_tensor(lambda tmp, f=f: shutil.copyfile(entry / f, tmp), store.path(f))
        self._fresh[key] = fresh and not hit  # computed by this session: may be published
        self.records[name] = {"key": key, "reused": hit, "files": len(files)}
        self.write_record(store)
        return hit

    def publish(self, store: RunStore, key: str, files: list[str], inputs: dict) -> None:
        """Store files this session computed as the entry `key` (atomically: a directory
        renamed into place; a concurrent writer's identical entry wins). Files a resumed run
        found on disk are never published: an earlier session may have run other code."""
        if self.root is None or not self._fresh.get(key, True) or (
                self._entry(key) / "inputs.json").is_file():
            return
        if not all(store.exists(f) for f in files):
            return
        entry = self._entry(key)
        tmp = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=entry.parent))
            for f in files:
                (tmp / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(store.path(f), tmp / f)
            (tmp / "inputs.json").write_text(json.dumps({"env": self.env, "inputs": inputs},
                                                        indent=1, sort_keys=True, default=str))
            os.replace(tmp, entry)
        except OSError as e:  # a full or read-only cache, or another run published it first
            if not (entry / "inputs.json").is_file():
                print(f"[steerlens] WARNING: could not store {key[:12]} for reuse: {e}",
                      file=sys.stderr)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def write_record(self, store: RunStore) -> None:
        """reuse.json: the store used and, per artefact, its key and whether it was reused."""
        if self.root is None:
            store.write_json(REUSE_FILE, {"store": None, "artefacts": {}})
            return
        old = store.read_json(REUSE_FILE)["artefacts"] if store.exists(REUSE_FILE) else {}
        for name, rec in self.records.items():  # a resumed run keeps what its start reused
            prev = old.get(name) or {}
            if prev.get("reused") and prev.get("key") == rec.get("key"):
                rec["reused"] = True
        store.write_json(REUSE_FILE, {"store": str(self.root) if self.root else None,
                                        "artefacts": {**old, **self.records}})


@dataclass
class HarmMemo:
    """A cell's harm labels in the store, keyed by the cell's goals and completions and the
    judge's settings (`judges.rejudge.LabelMemo`)."""

    reuse: Reuse
    judge: dict  # the judge's settings
    hits: int = 0
    misses: int = 0

    def _key(self, cell: dict) -> tuple[str, dict]:
        inputs = {"goals": cell["goals"], "completions": cell["completions"], "judge": self.judge}
        return self.reuse.key("harm", inputs), {
            "judge": self.judge, "cell_sha256": digest([cell["goals"], cell["completions"]])}

    def get(self, cell: dict) -> list[bool] | None:
        key, _ = self._key(cell)
        path = self.reuse.root / key[:2] / key / "labels.json" if self.reuse.root else None
        if path is None or not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(path.read_text())["labels"]

    def put(self, cell: dict, labels: list[bool]) -> None:
        if self.reuse.root is None:
            return
        key, inputs = self._key(cell)
        tmp = Path(tempfile.mkdtemp(prefix=".labels."))
        (tmp / "labels.json").write_text(json.dumps({"labels": labels}))
        self.reuse.publish(RunStore(tmp), key, ["labels.json"], inputs)
        shutil.rmtree(tmp, ignore_errors=True)
