"""Run folders: everything a training stage produces, in one directory that later stages and notebooks read.

Layout of ``runs/<name>/``::

    config.json      how to rebuild the run: backbone (preset config or HF name, LoRA settings), data spec
                     {source, path, seed, max_history}, each stage's config and results, seed
    model/           the model as a Hugging Face folder (config.json, model.safetensors, tokenizer files):
                     `load_run` reads it, and so does `AutoModelForCausalLM.from_pretrained(run / "model")`
    state/<stage>/   resume state: `latest.json` names the newest complete checkpoint folder `ckpt-<step>/`
                     (weights as safetensors, optimizer/RNG with torch.save of tensors and plain containers,
                     loaded with `torch.load(weights_only=True)`, counters as JSON)
    metrics.jsonl    one JSON record per training step (appended and flushed as training goes)

LoRA runs store the *merged* model in ``model/`` (a plain HF model: RL and evaluation need no peft, and the
SFT model is RL's frozen reference anyway); config.json records the adapter settings.

Every file is written to a temporary name and renamed into place, and a checkpoint folder becomes visible
only through `latest.json` once complete, so an interruption at any moment leaves the previous state usable.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CONFIG_FILE = "config.json"
MODEL_DIR = "model"
STATE_DIR = "state"
METRICS_FILE = "metrics.jsonl"
RUN_FORMAT = 1


# ----------------------------------------------------------------------------------------------- files


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file, flush it to disk, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _replace_dir(tmp: Path, final: Path) -> None:
    """Put a completed folder in place of `final`. A crash between the two renames leaves `final.old`,
    which `_existing_dir` falls back to."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def _existing_dir(final: Path) -> Path:
    old = final.with_name(final.name + ".old")
    return old if not final.exists() and old.exists() else final


@contextlib.contextmanager
def _quiet_transformers():
    """Silence the progress bars transformers shows when saving and loading small models."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# ----------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """A loaded run folder."""

    path: Path  # the run folder
    model: Any  # a transformers causal LM in eval mode
    tokenizer: Any  # its tokenizer (left padding)
    config: dict  # the parsed config.json


def dataset_spec(source: str, path: str | Path | None = None, seed: int = 0, max_history: int = 10) -> dict:
    """How `riser_lite.data.load_dataset` rebuilds a dataset; recorded in config.json under "data"."""
    return {"source": source, "path": None if path is None else str(path), "seed": int(seed),
            "max_history": int(max_history)}


def update_config(run_dir: str | Path, **sections) -> dict:
    """Merge top-level sections into the run's config.json (created if absent) and return the result."""
    path = Path(run_dir) / CONFIG_FILE
    config = read_json(path) if path.exists() else {"format": RUN_FORMAT}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    write_json(path, json.loads(json.dumps(config)))  # fails early on values JSON cannot hold
    return config


def save_model(run_dir: str | Path, model, tokenizer) -> Path:
    """Write the model (LoRA merged into a copy) and tokenizer to ``run_dir/model`` as safetensors."""
    from riser_lite.model.backbone import is_lora

    final = Path(run_dir) / MODEL_DIR
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if is_lora(model):
        import copy

        model = copy.deepcopy(model).merge_and_unload()  # the training model keeps its adapters
    with _quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    _replace_dir(tmp, final)
    return final


def save_run(run_dir: str | Path, model, tokenizer, config: dict | None = None) -> Path:
    """Save model, tokenizer and config sections (merged into any existing config.json). Returns run_dir."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
    update_config(run_dir, **(config or {}), model={"attention": attention})
    save_model(run_dir, model, tokenizer)
    return run_dir


def load_run(run_dir: str | Path, device: str | torch.device | None = None) -> Run:
    """Load a run folder's model (eval mode) and tokenizer. Loading gives bit-identical outputs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder: expected {CONFIG_FILE} in it")
    config = read_json(config_path)
    model_dir = _existing_dir(run_dir / MODEL_DIR)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"run {run_dir} has no saved model yet (expected {model_dir}/); "
                                "was training interrupted? Resume it with the same command.")
    kwargs = {}
    attention = config.get("model", {}).get("attention")
    if attention:  # the attention kernel is not saved by transformers; outputs must match to the bit
        kwargs["attn_implementation"] = attention
    with _quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if device is not None:
        model.to(device)
    model.eval()
    return Run(path=run_dir, model=model, tokenizer=tokenizer, config=config)


def load_run_dataset(run: Run | str | Path):
    """The RecDataset a run was trained on, rebuilt from the recorded data spec (items in the run's form)."""
    from riser_lite.data import load_dataset

    config = run.config if isinstance(run, Run) else read_json(Path(run) / CONFIG_FILE)
    spec = config.get("data")
    if not spec or not spec.get("source"):
        raise ValueError("this run records no data spec {source, path, seed, max_history} (it was trained on "
                         "an in-memory dataset); load the dataset yourself")
    from riser_lite.items.represent import apply_items

    dataset = load_dataset(spec["source"], spec.get("path"), seed=spec.get("seed", 0),
                           max_history=spec.get("max_history", 10))
    return apply_items(dataset, spec.get("items"))  # semantic IDs: the very codes the run was trained with


# ----------------------------------------------------------------------------------------------- metrics


class MetricsLog:
    """Appends one JSON record per line to metrics.jsonl and flushes each one (a crash loses nothing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | Path, stage: str | None = None) -> list[dict]:
    """Records of a metrics.jsonl file (or of a run folder), optionally of one stage only."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write: ignore it
                continue
    return [r for r in records if stage is None or r.get("stage") == stage]


def truncate_metrics(path: str | Path, stage: str, after_step: int) -> None:
    """Drop `stage` records with step > after_step (they are recomputed when training resumes)."""
    path = Path(path)
    if not path.exists():
        return
    keep = [r for r in read_metrics(path)
            if r.get("stage") != stage or int(r.get("step", 0)) <= after_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


# ----------------------------------------------------------------------------------------------- resume state


@dataclass
class Checkpoint:
    """A training stage's resume state."""

    step: int  # optimizer steps done
    tensors: dict[str, dict[str, torch.Tensor]]  # named groups of tensors (e.g. "weights", "best")
    objects: dict[str, Any]  # torch-serialisable containers of tensors (optimizer state, RNG states)
    meta: dict  # JSON counters (epoch, best loss, history, config)


def save_checkpoint(run_dir: str | Path, stage: str, ckpt: Checkpoint, keep: int = 1) -> Path:
    """Write a complete checkpoint folder, then point `latest.json` at it; keep the newest `keep` folders."""
    from safetensors.torch import save_file

    root = Path(run_dir) / STATE_DIR / stage
    root.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{ckpt.step:08d}"
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for group, tensors in ckpt.tensors.items():
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, str(tmp / f"{group}.safetensors"))
    for group, obj in ckpt.objects.items():
        torch.save(obj, tmp / f"{group}.pt")
    write_json(tmp / "meta.json", {"step": ckpt.step, **ckpt.meta})
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json(root / "latest.json", {"checkpoint": name, "step": ckpt.step})
    for old in sorted(p for p in root.glob("ckpt-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old)
    return final


def load_checkpoint(run_dir: str | Path, stage: str) -> Checkpoint | None:
    """The newest complete checkpoint of a stage, or None if there is none."""
    from safetensors.torch import load_file

    root = Path(run_dir) / STATE_DIR / stage
    pointer = root / "latest.json"
    if not pointer.exists():
        return None
    folder = root / read_json(pointer)["checkpoint"]
    meta = read_json(folder / "meta.json")
    tensors = {p.stem: load_file(str(p)) for p in sorted(folder.glob("*.safetensors"))}
    objects = {p.stem: torch.load(p, weights_only=True) for p in sorted(folder.glob("*.pt"))}
    return Checkpoint(step=int(meta.pop("step")), tensors=tensors, objects=objects, meta=meta)


def clear_checkpoints(run_dir: str | Path, stage: str) -> None:
    """Remove a stage's resume state (e.g. when starting over)."""
    root = Path(run_dir) / STATE_DIR / stage
    if root.exists():
        shutil.rmtree(root)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global RNG states as tensors and plain containers (loadable with weights_only=True)."""
    version, keys, _ = random.getstate()
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python_version": version, "python": list(keys),
            "numpy_keys": torch.from_numpy(numpy_state[1].copy()), "numpy_pos": int(numpy_state[2])}


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy(), state["numpy_pos"], 0, 0.0))


def trainable_parameters(model) -> dict[str, torch.nn.Parameter]:
    """Parameters that train (all of a local model; only the adapters of a LoRA model), by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_parameters(params: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]) -> None:
    """Copy saved values into parameters; every parameter must be present."""
    missing = sorted(set(params) - set(values))
    if missing:
        raise ValueError(f"checkpoint lacks parameters {missing[:5]}; was it made for this model?")
    for name, p in params.items():
        p.copy_(values[name].to(p.device, p.dtype))
