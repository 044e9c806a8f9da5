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
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from steerlens.rundir import RunStore, atomic_save_tensor

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
    """sha256 of the vocabulary, the chat template and the special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    return digest({"vocab": vocab, "template": tokenizer.chat_template,
                   "special": tokenizer.special_tokens_map, "pad": tokenizer.pad_token_id,
                   "side": tokenizer.padding_side})


@cache
def source_digest() -> str:
    """sha256 of steerlens' own Python source (a code change invalidates every entry)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def environment(model, device: str, dtype: str) -> dict:
    """What every entry's floats rest on, besides its own inputs."""
    from importlib.metadata import version

    import transformers

    from steerlens import __version__

    return {"steerlens": __version__, "source": source_digest(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "transformer_lens": version("transformer-lens"), "device": device, "dtype": dtype,
            "weights": weights_digest(model), "tokenizer": tokenizer_digest(model.tokenizer),
            "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model}


def data_digests(*relative: str) -> dict[str, str]:
    """sha256 of the named data files (paths relative to the data directory)."""
    from steerlens.datasets.loaders import data_dir

    return {r: file_digest(data_dir() / r) for r in relative}


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

    def key(self, kind: str, inputs: dict) -> str:
        return digest({"kind": kind, "env": self.env, "inputs": inputs})

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def provide(self, store: RunStore, name: str, key: str, files: list[str]) -> bool:
        """Copy an entry's files into the run directory (those not there yet) when the entry
        exists; record the artefact either way. True if the entry was used."""
        entry = self._entry(key) if self.root is not None else None
        hit = entry is not None and (entry / "inputs.json").is_file()
        missing = [f for f in files if not store.exists(f)]
        if hit:
            for f in missing:
                atomic_save_tensor(lambda tmp, f=f: shutil.copyfile(entry / f, tmp), store.path(f))
        self.records[name] = {"key": key, "reused": bool(hit and missing),
                              "files": len(files)}
        return hit

    def publish(self, store: RunStore, key: str, files: list[str], inputs: dict) -> None:
        """Store the run's files as the entry `key` (atomically: a directory renamed into
        place; a concurrent writer's identical entry wins)."""
        if self.root is None or (self._entry(key) / "inputs.json").is_file():
            return
        if not all(store.exists(f) for f in files):
            return
        entry = self._entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=entry.parent))
        for f in files:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.path(f), tmp / f)
        (tmp / "inputs.json").write_text(json.dumps({"env": self.env, "inputs": inputs},
                                                    indent=1, sort_keys=True, default=str))
        try:
            os.replace(tmp, entry)
        except OSError:  # another run published the same entry first
            shutil.rmtree(tmp, ignore_errors=True)

    def write_record(self, store: RunStore) -> None:
        """reuse.json: the store used and, per artefact, its key and whether it was reused."""
        old = store.read_json("reuse.json")["artefacts"] if store.exists("reuse.json") else {}
        for name, rec in self.records.items():  # a resumed run keeps what its start reused
            prev = old.get(name) or {}
            if prev.get("reused") and prev.get("key") == rec.get("key"):
                rec["reused"] = True
        store.write_json("reuse.json", {"store": str(self.root) if self.root else None,
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
        return self.reuse.key("harm", inputs), {"judge": self.judge, "setting": cell.get("setting")}

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
