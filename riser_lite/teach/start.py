"""The shared start of notebooks 03-06: an SFT run, its dataset and item space, and the prompts to use.

`class_start` picks a notebook's SFT settings (their times are in docs/teaching_guide.md);
`load_or_train_sft` uses the finished run notebook 02 left, or trains those settings into a sibling folder
named by them, which never overwrites 02's run and is found again by the next notebook.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from riser_lite import runs
from riser_lite.sft import PRETRAINED_LR, STAGE, SFTConfig, run_sft

BACKBONES = ("tiny", "smollm2-135m")  # what a notebook's BACKBONE may name (micro: the smoke runs)
DATASETS = ("synthetic", "lastfm")  # what a notebook's DATA may name


@dataclass(frozen=True)
class SFTSettings:
    """What a notebook trains when it finds no finished SFT run (the rest of SFTConfig stays default)."""

    preset: str = "tiny"  # backbone: a preset ("micro", "tiny", "small") or a pretrained name (LoRA SFT)
    epochs: int = 2  # passes over the training examples (early stopping may end sooner)
    batch_size: int = 32  # examples per optimizer step
    max_valid: int | None = 200  # validation examples for the loss and early stopping (None: all)
    data: str = "synthetic"  # "synthetic" (bundled) or "lastfm" (read from LASTFM_PATH)
    max_train: int | None = None  # train on a seeded sample of at most this many windows (None: all)
    lr: float | None = None  # peak learning rate; None: SFTConfig's (from scratch) or the LoRA default
    mixed_precision: str = "no"  # "fp16" (T4) or "bf16" (Ampere and later) autocast on a GPU; "no" on a CPU

    @property
    def pretrained(self) -> bool:
        """True for a pretrained backbone (fine-tuned with LoRA adapters), False for a preset."""
        from riser_lite.model.backbone import PRESETS

        return self.preset not in PRESETS

    def folder_name(self, seed: int) -> str:
        """The run folder's name, e.g. ``sft-tiny-2ep-b32-v200-seed0``: every setting is in it."""
        valid = "all" if self.max_valid is None else self.max_valid
        extra = "".join([f"-{self.data}" if self.data != "synthetic" else "",
                         f"-n{self.max_train}" if self.max_train else "",
                         f"-lr{self.lr:g}" if self.lr else "",
                         f"-{self.mixed_precision}" if self.mixed_precision != "no" else ""])
        return f"sft-{self.preset}{extra}-{self.epochs}ep-b{self.batch_size}-v{valid}-seed{seed}"

    def config(self, progress: bool) -> SFTConfig:
        lr = self.lr or (PRETRAINED_LR["lora"] if self.pretrained else SFTConfig.lr)
        return SFTConfig(epochs=self.epochs, batch_size=self.batch_size, max_valid=self.max_valid, lr=lr,
                         max_train=self.max_train, mixed_precision=self.mixed_precision, progress=progress)


CLASS_SFT = SFTSettings()  # "SFT for class": the tiny backbone, 2 epochs (timed in docs/teaching_guide.md)
SMOKE_SFT = SFTSettings(preset="micro", epochs=1, max_valid=50)  # the smoke runs' start: seconds
# The real model's class start: one pass of LoRA over 400 windows (50 steps of 8) teaches the answer's form
# (a catalogue name on one line) and some taste; its time on a 2-core CPU is in docs/teaching_guide.md.
REAL_SFT = SFTSettings(preset="smollm2-135m", epochs=1, batch_size=8, max_valid=50, data="lastfm",
                       max_train=400)
# On a GPU (Colab's T4): 25 times the windows in batches of 32 under fp16 autocast; its cost is estimated, not
# measured, in docs/real_model.md ("On a GPU").
GPU_REAL_SFT = SFTSettings(preset="smollm2-135m", epochs=1, batch_size=32, max_valid=122, data="lastfm",
                           max_train=10000, mixed_precision="fp16")
SMOKE_REAL_SFT = SFTSettings(preset="smollm2-135m", epochs=1, batch_size=4, max_valid=8, data="lastfm",
                             max_train=8)  # the smoke runs' real start: two LoRA steps


def class_start(backbone: str = "tiny", data: str | None = None, smoke: bool = False) -> SFTSettings:
    """The SFT start for a notebook's BACKBONE ("tiny" or "smollm2-135m"), DATA (None: the backbone's own,
    synthetic for `tiny`, LastFM, whose names it may know, for the real model) and SMOKE; the real model
    on a CUDA machine gets `GPU_REAL_SFT`."""
    if backbone not in BACKBONES:
        raise ValueError(f"BACKBONE must be one of {BACKBONES}, got {backbone!r}")
    if data is not None and data not in DATASETS:
        raise ValueError(f"DATA must be one of {DATASETS} or None, got {data!r}")
    if backbone == "tiny":
        settings = SMOKE_SFT if smoke else CLASS_SFT
        lastfm = {"max_train": 2000 if smoke else 10000, "max_valid": 50 if smoke else 122}
        return dataclasses.replace(settings, data="lastfm", **lastfm) if data == "lastfm" else settings
    settings = SMOKE_REAL_SFT if smoke else GPU_REAL_SFT if torch.cuda.is_available() else REAL_SFT
    if settings.mixed_precision == "fp16" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        settings = dataclasses.replace(settings, mixed_precision="bf16")  # Ampere or later: no loss scaling
    return dataclasses.replace(settings, data=data) if data else settings


def lastfm_folder(path: str | Path | None = None) -> Path:
    """The LastFM folder: `path`, else $RISER_LITE_LASTFM; a clear error when neither holds the data."""
    folder = path or os.environ.get("RISER_LITE_LASTFM")
    if not folder or not (Path(folder) / "train.jsonl").is_file():
        where = f"{folder} holds no train.jsonl" if folder else "LASTFM_PATH None, RISER_LITE_LASTFM unset"
        raise FileNotFoundError(f"LastFM data not found ({where}). Get the LLaRA release of LastFM (train/"
                                "valid/test.jsonl, id2name.txt; docs/teaching_guide.md says where), then set "
                                "LASTFM_PATH to its folder, or set DATA = 'synthetic'")
    return Path(folder)


@dataclass
class SFTStart:
    """What the first cells of notebooks 03-06 need."""

    path: Path  # the SFT run folder used
    run: runs.Run  # the loaded run (model in eval mode, tokenizer, config)
    dataset: object  # the RecDataset the run was trained on
    space: object  # the ItemSpace of its catalogue (titles, trie, branching flags)
    trained_here: bool  # True when this call trained the run
    settings: str  # the run's settings in one line, for the reader


def finished_sft_run(path: str | Path) -> bool:
    """True when `path` holds a finished SFT run (results recorded, model saved) of this run-folder format;
    a folder of an older format is not one, and is left as it is."""
    path = Path(path)
    model = path / runs.MODEL_DIR  # whole weights (config.json) or a LoRA adapter and its base (base.json)
    saved = any((model / f).is_file() for f in ("config.json", "base.json"))
    if not (saved and (path / runs.CONFIG_FILE).is_file() and runs.is_run_folder(path)):
        return False
    return STAGE in runs.read_json(path / runs.CONFIG_FILE).get("results", {})


def describe_sft_run(config: dict) -> str:
    """The settings a run's config.json records, in one line (``tiny backbone, 2 epochs (ran 2), ...``)."""
    sft, result = config.get("sft", {}), config.get("results", {}).get(STAGE, {})
    backbone = config.get("backbone", {})
    model = backbone.get("preset") or backbone.get("pretrained") or "custom"
    valid = sft.get("max_valid") or "all"
    parts = [f"{model} backbone", f"{sft.get('epochs')} epochs (ran {result.get('epochs_run', '?')})",
             f"batch {sft.get('batch_size')}", f"lr {sft.get('lr')}", f"{valid} validation examples",
             f"seed {config.get('seed')}"]
    if "best_valid_loss" in result:
        parts.append(f"best validation loss {result['best_valid_loss']:.3f}")
    return ", ".join(parts)


def same_start(config: dict, settings: SFTSettings) -> bool:
    """True when a run's config.json records the backbone and the data source `settings` ask for."""
    backbone = config.get("backbone", {})
    name = backbone.get("pretrained") if settings.pretrained else backbone.get("preset")
    return name == settings.preset and config.get("data", {}).get("source") == settings.data


def load_or_train_sft(sft_run: str | Path, settings: SFTSettings = CLASS_SFT, seed: int = 0,
                      progress: bool = True, lastfm_path: str | Path | None = None) -> SFTStart:
    """Use the finished SFT run in `sft_run` if it has `settings`' backbone and data (whatever its other
    settings), else train `settings` into a sibling folder named by them, leaving `sft_run` alone.
    `lastfm_path`: see `lastfm_folder`."""
    from riser_lite.items.catalog import ItemSpace

    sft_run = Path(sft_run)
    trained_here = False
    if finished_sft_run(sft_run) and same_start(runs.read_config(sft_run), settings):
        path = sft_run
    else:
        path = sft_run.parent / settings.folder_name(seed)
        if not finished_sft_run(path):
            data_path = lastfm_folder(lastfm_path) if settings.data == "lastfm" else None
            print(f"{sft_run} holds no finished SFT run of {settings.preset} on {settings.data}: training "
                  f"{settings} into {path}")
            run_sft(settings.data, path=data_path, preset=settings.preset,
                    model=settings.preset if settings.pretrained else None, lora=settings.pretrained or None,
                    config=settings.config(progress), out=path, seed=seed)
            trained_here = True
    run = runs.load_run(path)
    dataset = runs.load_run_dataset(run)
    space = ItemSpace(dataset.catalog, run.tokenizer)
    description = describe_sft_run(run.config)
    print(f"SFT run {path}: {description}")
    return SFTStart(path=path, run=run, dataset=dataset, space=space, trained_here=trained_here,
                    settings=description)


def sample_examples(dataset, count: int, seed: int, split: str = "train") -> list:
    """`count` examples of a split in a seeded random order (all of them when the split is shorter)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:  # [:-1] would drop one silently
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    rows = dataset.splits[split]
    generator = torch.Generator().manual_seed(seed)
    return [rows[i] for i in torch.randperm(len(rows), generator=generator)[:count].tolist()]
