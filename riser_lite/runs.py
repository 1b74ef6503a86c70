"""Run folders: everything a training stage produces, in one directory later stages and notebooks read.

Layout of ``runs/<name>/``::

    config.json      how to rebuild the run: backbone, data spec, each stage's config and results, seed
    model/           a Hugging Face folder (config.json, model.safetensors, tokenizer files, checksums.json)
    state/<stage>/   resume state: `latest.json` names the newest complete checkpoint folder `ckpt-<step>/`
    metrics.jsonl    one JSON record per training step (appended and flushed as training goes)

Nothing is lost and every damaged file is named: a folder is the package's only when it holds `MARKER_FILE`,
whose manifest lists the entries the package wrote (``--overwrite`` removes those only); one process writes
a run (`writer_lock`); every model and checkpoint file is checked against its recorded SHA-256; each file is
written under a temporary name and renamed into place, so an interruption leaves the previous state usable.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

CONFIG_FILE = "config.json"
MODEL_DIR = "model"
STATE_DIR = "state"
METRICS_FILE = "metrics.jsonl"
CHECKSUM_FILE = "checksums.json"  # in model/: {file name: SHA-256} of every other file there
BASE_FILE = "base.json"  # in model/ of a LoRA run stored as its adapter: the base model's identity
PACKAGE = "riser-lite"
RUN_FORMAT = 3  # 3: the compact RLConfig / SFTConfig fields; 2: ownership by MARKER_FILE and its manifest
# A name no user would choose: the folder is the package's only when this file is in it. It lists the
# entries the package wrote there ("files"), the only ones ``--overwrite`` removes.
MARKER_FILE = ".riser-lite-run.json"
LOCK_FILE = ".riser-lite.lock"  # present while a process writes the folder (`writer_lock`)
OLD_RUN = f"a run made before run-folder format {RUN_FORMAT} must be re-run with a new --out"
ATTENTION_KERNELS = ("eager", "sdpa")  # model.attention values load_run passes to transformers


class RunError(ValueError):
    """A run folder that is damaged, or a use of one that would lose work. The message names the file."""


class MissingRunError(RunError, FileNotFoundError):
    """A run folder, or a file every run folder has, does not exist."""


# What transformers, safetensors and torch raise on a damaged file; torch.load(weights_only=True) refuses
# anything but tensors and plain containers with pickle's UnpicklingError (the package never imports pickle).
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, EOFError, SafetensorError,
               torch.serialization.pickle.UnpicklingError)


def brief(err: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


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
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _parse_json(raw: bytes) -> Any:
    """Parsed UTF-8 JSON, or a ValueError saying what is wrong (the caller names the file or line)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"byte {err.start} is not UTF-8") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg}: line {err.lineno}, column {err.colno})") from None
    except (ValueError, RecursionError) as err:  # e.g. nesting too deep, an integer too long to convert
        raise ValueError(f"not valid JSON ({type(err).__name__}: {str(err)[:80]})") from None


def read_json(path: str | Path) -> Any:
    """The parsed JSON file; a file that is not UTF-8 JSON raises `RunError` naming it and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise MissingRunError(f"{path}: file not found")
    try:
        return _parse_json(path.read_bytes())
    except ValueError as err:
        raise RunError(f"{path}: {err}; the file is damaged or was cut short") from None


def read_config(run_dir: str | Path) -> dict:
    """A run folder's config.json, checked to be a JSON object in a folder this version owns."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingRunError(f"{run_dir} is a file, not a run folder" if run_dir.exists() else
                              f"{run_dir}: no such run folder")
    if not (run_dir / CONFIG_FILE).is_file():
        raise MissingRunError(f"{run_dir} is not a run folder: expected {CONFIG_FILE} in it")
    if read_marker(run_dir) is None:
        raise RunError(f"{run_dir} has no {MARKER_FILE}: it is not a run folder of this riser-lite "
                       f"({OLD_RUN})")
    config = read_json(run_dir / CONFIG_FILE)
    if not isinstance(config, dict):
        raise RunError(f"{run_dir / CONFIG_FILE}: expected a JSON object, got {type(config).__name__}; the "
                       "file is damaged")
    return config


def _replace_dir(tmp: Path, final: Path) -> None:
    """Put a completed folder in place of `final`. A crash between the two renames leaves `final.old`,
    which `load_run` falls back to."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


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
    weights_sha256: dict  # {file in model/: SHA-256}, verified


def dataset_spec(source: str, path: str | Path | None = None, seed: int = 0, max_history: int = 10) -> dict:
    """How `riser_lite.data.load_dataset` rebuilds a dataset, recorded in config.json under "data"."""
    # An absolute path: a run read from another directory must not silently read that directory's data.
    return {"source": source, "path": None if path is None else os.path.abspath(path), "seed": int(seed),
            "max_history": int(max_history)}


def update_config(run_dir: str | Path, **sections) -> dict:
    """Merge top-level sections into the run's config.json (created if absent) and return the result."""
    path = own_entry(run_dir, CONFIG_FILE)
    config = read_config(run_dir) if path.exists() else {"format": RUN_FORMAT}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    write_json(path, json_round_trip(config))  # fails early on values JSON cannot hold
    return config


def json_round_trip(value):
    """`value` as JSON gives it back (tuples become lists): what a recorded config compares against."""
    return json.loads(json.dumps(value))


def save_run(run_dir: str | Path, model, tokenizer, config: dict | None = None) -> Path:
    """Merge `config`'s sections into config.json, then write the model and tokenizer to ``model/`` as
    safetensors with their checksums; returns run_dir. A LoRA model on a known base (``riser_lite_base``:
    a backbone name or another run) is stored as its adapter plus ``base.json``."""
    from riser_lite.model.backbone import is_lora

    run_dir = Path(run_dir)
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
    update_config(run_dir, **(config or {}), model={"attention": attention})
    final = own_entry(run_dir, MODEL_DIR)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    base = None
    if is_lora(model):
        inner = model.get_base_model()
        known, vocab = getattr(inner, "riser_lite_base", None), getattr(inner.config, "vocab_size", None)
        if known and known.get("vocab_size", vocab) == vocab:
            base = {**known, "vocab_size": vocab}
        else:  # an unknown base, or added tokens (semantic IDs): the whole model, LoRA merged into a copy
            model = copy.deepcopy(model).merge_and_unload()
    with _quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    if base is not None:
        write_json(tmp / BASE_FILE, base)
    write_json(tmp / CHECKSUM_FILE, folder_checksums(tmp))  # inside the folder: swapped in with it
    _replace_dir(tmp, final)
    return run_dir


def _load_base(base: dict, where: Path, device):
    """The base model a LoRA run's adapter was trained on, checked against its recorded SHA-256."""
    if "run" in base:
        run = load_run(base["run"], device=device)
        if run.weights_sha256 != base.get("checksums"):
            raise RunError(f"{where}: the base run {base['run']} has other weights than this run was "
                           "trained on; restore that run or retrain this one")
        model = run.model
    else:
        from riser_lite.model.backbone import load_pretrained
        from riser_lite.model.pretrained import BackboneError, check_identity

        try:
            model = load_pretrained(check_identity(base, str(where)))[0]
        except BackboneError as err:
            raise RunError(str(err)) from None
    if model.config.vocab_size != base.get("vocab_size", model.config.vocab_size):
        raise RunError(f"{where}: the base model has {model.config.vocab_size} tokens, the adapter "
                       f"{base['vocab_size']}")
    return model


def load_run(run_dir: str | Path, device: str | torch.device | None = None) -> Run:
    """Load a run folder's model (eval mode) and tokenizer, checked against ``model/checksums.json``:
    bit-identical outputs, or a `RunError` naming the damaged file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model_dir = run_dir / MODEL_DIR
    if not model_dir.exists() and model_dir.with_name(MODEL_DIR + ".old").exists():
        model_dir = model_dir.with_name(MODEL_DIR + ".old")  # a crash inside `_replace_dir`
    if not model_dir.is_dir():
        raise MissingRunError(f"run {run_dir} has no saved model yet (expected {model_dir}/); "
                              "was training interrupted? Resume it with the same command.")
    adapter = (model_dir / "adapter_config.json").is_file()
    if not (model_dir / "config.json").is_file() and not adapter:
        raise MissingRunError(f"{model_dir / 'config.json'}: file not found; the saved model is incomplete "
                              "(retrain the run, or restore the file)")
    record = model_dir / CHECKSUM_FILE  # if a user deleted it, a damaged file fails to load instead
    checksums = (_verify_files(model_dir, read_json(record), record, "model folder", "the file is damaged")
                 if record.exists() else folder_checksums(model_dir))
    attention = (config.get("model") or {}).get("attention")
    if attention is not None and attention not in ATTENTION_KERNELS:  # transformers may fetch other names
        raise RunError(f"{run_dir / CONFIG_FILE}: model.attention is {str(attention)[:40]!r}; expected one "
                       f"of {', '.join(ATTENTION_KERNELS)} or null")
    # the attention kernel is not saved by transformers; outputs must match to the bit
    kwargs = {"attn_implementation": attention} if attention else {}
    base = _load_base(read_json(model_dir / BASE_FILE), model_dir, device) if adapter else None
    try:
        with _quiet_transformers():
            if adapter:  # base + adapter, merged: every later stage sees a plain HF model
                from peft import PeftModel

                model = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
            else:
                model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except LOAD_ERRORS as err:
        raise RunError(f"{model_dir}: the saved model does not load ({brief(err)}); the folder is "
                       "damaged") from None
    tokenizer.padding_side = "left"
    # What a LoRA run started from this one records as its base (see save_run).
    model.riser_lite_base = {"run": str(run_dir.resolve()), "checksums": checksums}
    if device is not None:
        model.to(device)
    model.eval()
    return Run(path=run_dir, model=model, tokenizer=tokenizer, config=config, weights_sha256=checksums)


def load_spec_dataset(spec: dict):
    """The dataset a data spec (`dataset_spec`) names."""
    from riser_lite.data import load_dataset

    return load_dataset(spec["source"], spec.get("path"), seed=spec.get("seed", 0),
                        max_history=spec.get("max_history", 10))


def load_run_dataset(run: Run | str | Path):
    """The RecDataset a run was trained on, rebuilt from the recorded data spec (items in the run's form)."""
    from riser_lite.items.represent import apply_items

    config = run.config if isinstance(run, Run) else read_config(run)
    spec = config.get("data")
    if not spec or not spec.get("source"):
        raise RunError("this run records no data spec {source, path, seed, max_history} (it was trained on "
                       "an in-memory dataset); load the dataset yourself")
    dataset = load_spec_dataset(spec)
    recorded = config.get("data_counts")
    if recorded is not None and recorded != data_counts(dataset):  # the folder now holds other data
        raise RunError(f"the data at {spec.get('path') or spec['source']} is not the data this run was "
                       f"trained on (the run recorded {recorded}, the data has {data_counts(dataset)}); "
                       "restore it or retrain")
    return apply_items(dataset, spec.get("items"))  # semantic IDs: the very codes the run was trained with


def data_counts(dataset) -> dict[str, int]:
    """Items and examples per split: recorded by a run (config.json "data_counts") and checked on reload."""
    return {"items": len(dataset.catalog), **{split: len(rows) for split, rows in dataset.splits.items()}}


# ----------------------------------------------------------------------------------------------- metrics


class MetricsLog:
    """Appends one JSON record per line to metrics.jsonl and flushes each one (a crash loses nothing)."""

    def __init__(self, path: str | Path):
        self.path = own_entry(Path(path).parent, Path(path).name)
        self._handle = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _metrics_record(raw: bytes) -> dict:
    """One metrics.jsonl line as a record, or a ValueError saying what is wrong with it."""
    record = _parse_json(raw)
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not an object")
    step = record.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int):
        raise ValueError(f"step {step!r} is not an integer")
    return record


def scan_metrics(path: str | Path) -> tuple[list[dict], str | None]:
    """(records before the first damaged line, what is wrong with that line or None). A damaged line
    (usually one cut by a crash mid-write) ends what can be trusted: nothing after it is read."""
    path = Path(path)
    path = path / METRICS_FILE if path.is_dir() else path  # a run folder's log
    if not path.exists():
        return [], None
    records = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if raw.strip():
            try:
                records.append(_metrics_record(raw))
            except ValueError as err:
                return records, f"{path}, line {number}: {err}"
    return records, None


def read_metrics(path: str | Path, stage: str | None = None) -> list[dict]:
    """Records of a metrics.jsonl file (or of a run folder) up to a damaged line, optionally of one stage."""
    records, _ = scan_metrics(path)
    return [r for r in records if stage is None or r.get("stage") == stage]


def truncate_metrics(path: str | Path, stage: str, after_step: int) -> str | None:
    """Drop from a metrics.jsonl file the `stage` records with step > after_step (recomputed when training
    resumes), and a damaged line with every line after it, with a `RuntimeWarning` saying so; returns that
    message or None."""
    path = Path(path)
    if not path.exists():
        return None
    records, damage = scan_metrics(path)
    keep = [r for r in records if r.get("stage") != stage or r.get("step", 0) <= after_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    if damage is None:
        return None
    last = max((r.get("step", 0) for r in keep if r.get("stage") == stage), default=0)
    message = (f"{damage}; it and every line after it were dropped (the log now ends at {stage} step {last}, "
               f"training resumes after step {after_step})")
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return message


# ----------------------------------------------------------------------------------------------- resume state


@dataclass
class Checkpoint:
    """A training stage's resume state."""

    step: int  # optimizer steps done
    tensors: dict[str, dict[str, torch.Tensor]]  # named groups of tensors (e.g. "weights", "best")
    objects: dict[str, Any]  # torch-serialisable containers of tensors (optimizer state, RNG states)
    meta: dict  # JSON counters (epoch, best loss, history, config)


def save_checkpoint(run_dir: str | Path, stage: str, ckpt: Checkpoint) -> Path:
    """Write a complete checkpoint folder, point `latest.json` at it, then remove the older folders.
    Tensors go to safetensors, objects to torch.save (loaded with weights_only=True), the rest to meta.json
    with the SHA-256 of every file."""
    from safetensors.torch import save_file

    root = own_entry(run_dir, STATE_DIR) / stage
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
    write_json(tmp / "meta.json", {"step": ckpt.step, **ckpt.meta, "sha256": folder_checksums(tmp)})
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json(root / "latest.json", {"checkpoint": name, "step": ckpt.step})
    for old in sorted(p for p in root.glob("ckpt-*") if p.is_dir())[:-1]:
        shutil.rmtree(old)
    return final


def load_checkpoint(run_dir: str | Path, stage: str) -> Checkpoint | None:
    """The newest complete checkpoint of a stage, verified against its checksums, or None if there is none."""
    from safetensors.torch import load_file

    root = Path(run_dir) / STATE_DIR / stage
    damaged = f"the resume state is damaged (delete {root} to start the stage over)"
    pointer = root / "latest.json"
    if not pointer.exists():
        return None
    latest = read_json(pointer)
    name = latest.get("checkpoint") if isinstance(latest, dict) else None
    if not isinstance(name, str) or not _plain_name(name) or not (root / name).is_dir():
        raise RunError(f"{pointer}: names checkpoint {name!r}, which is not a folder beside it; {damaged}")
    folder = root / name
    meta = read_json(folder / "meta.json")
    step = meta.get("step") if isinstance(meta, dict) else None
    if isinstance(step, bool) or not isinstance(step, int):
        raise RunError(f"{folder / 'meta.json'}: expected a JSON object with an integer 'step'; damaged")
    _verify_files(folder, meta.pop("sha256", {}), folder / "meta.json", "checkpoint", damaged)
    try:
        tensors = {p.stem: load_file(str(p)) for p in sorted(folder.glob("*.safetensors"))}
        objects = {p.stem: torch.load(p, weights_only=True) for p in sorted(folder.glob("*.pt"))}
    except LOAD_ERRORS as err:
        raise RunError(f"{folder}: a checkpoint file does not load ({brief(err)}); {damaged}") from None
    return Checkpoint(step=int(meta.pop("step")), tensors=tensors, objects=objects, meta=meta)


class DivergedError(RunError):
    """Training produced a loss that is not a finite number; the last checkpoint written before is kept."""


def check_finite(value: float, what: str, stage: str, step: int, run_dir: str | Path | None) -> None:
    """Stop a diverged training (`DivergedError`, one line naming the step) instead of saving NaN weights."""
    if math.isfinite(value):
        return
    pointer = Path(run_dir) / STATE_DIR / stage / "latest.json" if run_dir is not None else None
    kept = "; nothing was saved"
    if pointer is not None and pointer.is_file():
        kept = f"; the last checkpoint (step {read_json(pointer).get('step')}) is kept in {pointer.parent}"
    raise DivergedError(f"{stage}: the {what} is {value} at step {step}: training diverged (a lower learning "
                        f"rate, --lr, may help) and was stopped{kept}")


def check_checkpoint_step(ckpt: Checkpoint | None, total: int, run_dir: str | Path, stage: str) -> None:
    """Refuse a checkpoint that claims more steps than the run has (resuming would train nothing)."""
    if ckpt is not None and not 0 <= ckpt.step <= total:
        root = Path(run_dir) / STATE_DIR / stage
        raise RunError(f"{root}: the checkpoint records step {ckpt.step}, but this run has {total} steps; "
                       f"the resume state is damaged (delete {root} to start the stage over)")


def clear_checkpoints(run_dir: str | Path, stage: str) -> None:
    """Remove a stage's resume state (e.g. when starting over)."""
    root = Path(run_dir) / STATE_DIR / stage
    if root.exists():
        shutil.rmtree(root)


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


# ----------------------------------------------------------------------------------------------- checksums


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex (read in 1 MiB blocks, so large weights need little memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_checksums(folder: str | Path) -> dict[str, str]:
    """{file name: SHA-256} of every file in a model or checkpoint folder but the record itself: tokenizer
    and config files too (two token ids swapped in tokenizer.json change every ranking like a weight)."""
    return {p.name: file_sha256(p) for p in sorted(Path(folder).iterdir())
            if p.is_file() and p.name != CHECKSUM_FILE}


def _verify_files(folder: Path, checksums, record: Path, what: str, damaged: str) -> dict[str, str]:
    """Check every {file name: SHA-256} of `checksums` (read from `record`) against the files in `folder`
    and return it; `damaged` ends the message of a damaged record."""
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise RunError(f"{record}: expected {{file name: sha256 hex}}; {damaged}")
    for name, digest in checksums.items():
        if not _plain_name(name):  # never read (nor show the hash of) a file outside the folder
            raise RunError(f"{record}: names {name[:60]!r}, which is not a file of the {what}; {damaged}")
        path = folder / name
        if not path.is_file():
            raise RunError(f"{path}: file not found, but its checksum was recorded when it was saved; the "
                           "folder is damaged")
        actual = file_sha256(path)
        if actual != digest:
            raise RunError(f"{path}: checksum mismatch (recorded sha256 {digest[:16]}..., found "
                           f"{actual[:16]}...): the file was damaged or changed after it was saved; retrain "
                           "or restore it")
    return dict(checksums)


# ----------------------------------------------------------------------------------------------- ownership


def _marker_error(path: Path, what: str) -> RunError:
    return RunError(f"{path / MARKER_FILE}: {what}; the folder is not one this riser-lite can use (re-run "
                    "the command that made it with a new --out)")


def read_marker(path: str | Path) -> dict | None:
    """The folder's ownership marker ({"package", "format", "kind", "files"}), or None when it has none;
    a damaged marker or one of another format raises `RunError` saying how to re-run."""
    path = Path(path)
    if not (path / MARKER_FILE).is_file():
        return None
    marker = read_json(path / MARKER_FILE)
    if not isinstance(marker, dict) or marker.get("package") != PACKAGE:
        raise _marker_error(path, f"expected a JSON object with \"package\": \"{PACKAGE}\"")
    if marker.get("format") != RUN_FORMAT:
        raise _marker_error(path, f"run-folder format {marker.get('format')!r}, this version reads format "
                                  f"{RUN_FORMAT} only")
    files = marker.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) and _plain_name(f) for f in files):
        raise _marker_error(path, "\"files\" must be a list of names of entries in the folder")
    return marker


def _plain_name(name: str) -> bool:
    """A name of an entry directly inside the folder (a manifest or checksum never points outside it)."""
    return name not in ("", ".", "..", MARKER_FILE, LOCK_FILE) and "/" not in name and "\\" not in name


def is_run_folder(path: str | Path) -> bool:
    """True for a folder this package made: it holds a current `MARKER_FILE`."""
    try:
        return read_marker(path) is not None
    except RunError:
        return False


def owned_entries(path: str | Path) -> list[str]:
    """The names the package wrote in an owned folder (its manifest); [] for any other folder."""
    marker = read_marker(path)
    return list(marker["files"]) if marker else []


def _foreign_entries(path: Path) -> list[str]:
    """Entries other than the lock and a marker being written (`write_json`'s temporary name)."""
    return sorted(p.name for p in path.iterdir() if p.name not in (LOCK_FILE, f".{MARKER_FILE}.tmp"))


def check_outputs(folder: str | Path, kind: str | None = None, names=()) -> Path:
    """Refuse (`RunError`, writing nothing) an output folder that is neither new, empty nor this version's
    (of `kind`, when given: a run never goes into a demo's folder), or a user's file among the `names` a
    command would write. Checked before any work; `claim_outputs` checks again when writing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunError(f"{folder} is a file; expected a folder to write into")
    marker = read_marker(folder)
    if marker is not None and kind is not None and marker.get("kind") != kind:
        raise RunError(f"{folder} is a riser-lite {marker.get('kind')} folder, not a {kind} folder; choose "
                       "another folder")
    if marker is None and folder.is_dir() and _foreign_entries(folder):
        old = (folder / CONFIG_FILE).is_file() and (folder / MODEL_DIR).is_dir()
        why = f"it has no {MARKER_FILE}" + (f": {OLD_RUN}" if old else "")
        raise RunError(f"{folder} is not empty and is not a riser-lite folder ({why}); choose a new or empty "
                       "folder so that none of its files is overwritten")
    owned = marker["files"] if marker else []
    for target in (folder / name for name in names if name not in owned):
        if target.exists() or target.is_symlink():
            raise RunError(f"{target} exists and was not written by riser-lite (it is not in "
                           f"{MARKER_FILE}); move it or choose another --out")
    return folder


def claim_outputs(folder: str | Path, kind: str = "run", names=()) -> Path:
    """`check_outputs`, then take `folder` as this package's and record `names` in its manifest before
    they are written."""
    folder = check_outputs(folder, kind, names)
    marker = read_marker(folder)
    if marker is None:
        folder.mkdir(parents=True, exist_ok=True)
        marker = {"package": PACKAGE, "format": RUN_FORMAT, "kind": kind, "files": []}
    new = [name for name in dict.fromkeys(names) if name not in marker["files"]]
    if new or not (folder / MARKER_FILE).is_file():
        write_json(folder / MARKER_FILE, {**marker, "files": [*marker["files"], *new]})
    return folder


def own_entry(folder: str | Path, name: str, kind: str = "run") -> Path:
    """`folder / name`, recorded in the folder's manifest before the package writes it (`claim_outputs`)."""
    return claim_outputs(folder, kind, [name]) / name


def clear_run_folder(path: str | Path) -> list[str]:
    """Remove the entries the package wrote (its manifest) and nothing else; returns the names left.
    Refuses (`RunError`) a folder that is not the package's: ``--overwrite`` never deletes a user's file."""
    path = check_outputs(path)
    marker = read_marker(path)
    if marker is None:
        return []
    for name in marker["files"]:
        # the entry and what a crash while writing it leaves beside it (`atomic_write_text`, `_replace_dir`)
        for entry in (path / n for n in (name, f".{name}.tmp", f"{name}.tmp", f"{name}.old")):
            if (entry / MARKER_FILE).is_file() and not entry.is_symlink():
                remove_owned_folder(entry)  # a run folder inside (a demo's seed0): by its own manifest
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
    write_json(path / MARKER_FILE, {**marker, "files": []})
    return [n for n in _foreign_entries(path) if n != MARKER_FILE]


def remove_owned_folder(path: str | Path) -> list[str]:
    """`clear_run_folder`, then the marker and the folder itself when nothing else is left in it; returns
    the names of the entries the package did not write (the folder is then kept)."""
    path = Path(path)
    left = clear_run_folder(path)
    if not left and path.is_dir():
        (path / MARKER_FILE).unlink(missing_ok=True)
        if not any(path.iterdir()):
            path.rmdir()
    return left


# ----------------------------------------------------------------------------------------------- one writer


@contextlib.contextmanager
def writer_lock(folder: str | Path):
    """Hold `LOCK_FILE` (the holder's PID and host) in an owned folder while one process writes it. A second
    writer is refused; a dead holder's lock is reported, never taken over: the folder may be half-written."""
    import socket

    lock = claim_outputs(folder) / LOCK_FILE
    host = socket.gethostname()
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise RunError(_lock_message(lock, host)) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "host": host}) + "\n")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _lock_message(lock: Path, host: str) -> str:
    """Why `lock` refuses a second writer, and what to do."""
    try:
        held = read_json(lock)
        pid, where = int(held["pid"]), str(held.get("host", ""))
    except (OSError, ValueError, KeyError, TypeError):  # RunError is a ValueError
        return (f"{lock}: a lock file that cannot be read; if no riser-lite command is writing "
                f"{lock.parent}, delete the lock (rm {lock}) and run again")
    if where == host and not _pid_alive(pid):
        return (f"{lock}: stale lock of process {pid}, which is no longer running (interrupted or killed); "
                f"delete it (rm {lock}) and run again to resume")
    return (f"{lock.parent} is being written by another riser-lite process (PID {pid} on {where or '?'}); "
            f"wait for it to finish or choose another --out (if no riser-lite command runs there, the PID "
            f"was reused: delete {lock})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return True


# ----------------------------------------------------------------------------------------------- lineage


def lineage_of(run: Run, allow_rl_start: bool = False) -> dict:
    """What an RL run started from `run` records under "lineage": path, stage and weights of its start.
    An RL run as the start (and frozen reference) is refused unless asked for explicitly."""
    stage = "rl" if "rl" in run.config else "sft"
    if stage == "rl" and not allow_rl_start:
        raise RunError(f"{run.path} is an RL run, not an SFT run; starting RL from it (and using it as the "
                       "frozen reference) needs train_rl(..., allow_rl_start=True)")
    return {"start_run": str(Path(run.path).resolve()), "start_stage": stage,
            "start_weights_sha256": dict(run.weights_sha256), "start_lineage": run.config.get("lineage")}


def check_rl_output(out: str | Path, lineage: dict | None, resume: bool = True) -> None:
    """Refuse an RL output folder that would overwrite its start or continue another run's lineage.
    lineage: `lineage_of(start)`, or None for an in-memory start (nothing to compare); resume=False: the
    folder's own lineage is replaced (the run starts over)."""
    out = check_outputs(out, "run")
    start = lineage and lineage.get("start_run")
    if start and out.resolve() == Path(start):
        raise RunError(f"--out {out} is the start run: RL would overwrite the model it starts from; choose "
                       "another --out")
    if not (out / CONFIG_FILE).exists():
        return
    saved = read_config(out)
    if "sft" in saved or "sft" in saved.get("results", {}):
        raise RunError(f"{out} holds an SFT run; RL would overwrite its model; choose another --out")
    recorded = saved.get("lineage")
    if not resume or lineage is None or recorded is None:
        return
    if recorded.get("start_weights_sha256") != lineage["start_weights_sha256"]:
        same = recorded.get("start_run") == lineage["start_run"]
        raise RunError(f"{out} continues RL from {recorded.get('start_run')}"
                       + (", whose weights have changed since (retrained?)" if same else
                          f", not from {lineage['start_run']}")
                       + "; resume with the start it was made from, or use another --out")


# ----------------------------------------------------------------------------------------------- threads

DEFAULT_THREADS = 1  # float reductions depend on the thread count: a fixed default gives the same numbers
