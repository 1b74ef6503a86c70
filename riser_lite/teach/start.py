"""The shared start of notebooks 03-06: an SFT run, its dataset and item space, and the prompts to use.

Notebook 02 trains the SFT run with the settings of its parameters cell into ``SFT_RUN``. A later notebook
calls `load_or_train_sft(SFT_RUN, settings, seed)`:

- if ``SFT_RUN`` holds a finished SFT run, that run is used, whatever settings it was trained with, and the
  notebook prints them (a class that shortened 02's run keeps going with the shorter run);
- otherwise the notebook trains its own start with `settings` into a sibling folder named by those settings
  (``runs/sft-tiny-2ep-b32-v200-seed0``), so it never collides with, or overwrites, a run 02 made with other
  settings, and the next notebook that needs the same start finds it there.

`CLASS_SFT` is the fast "SFT for class" start (its time on a 2-core CPU is in docs/teaching_guide.md) and
`SMOKE_SFT` the micro start of the smoke runs. `sample_examples` draws the notebooks' training prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from riser_lite import runs
from riser_lite.sft import STAGE, SFTConfig, run_sft


@dataclass(frozen=True)
class SFTSettings:
    """What a notebook trains when it finds no finished SFT run (the rest of SFTConfig stays default)."""

    preset: str = "tiny"  # backbone preset: "micro", "tiny" or "small"
    epochs: int = 2  # passes over the training examples (early stopping may end sooner)
    batch_size: int = 32  # examples per optimizer step
    max_valid: int | None = 200  # validation examples for the loss and early stopping (None: all)

    def folder_name(self, seed: int) -> str:
        """The run folder's name, e.g. ``sft-tiny-2ep-b32-v200-seed0``: every setting is in it."""
        valid = "all" if self.max_valid is None else self.max_valid
        return f"sft-{self.preset}-{self.epochs}ep-b{self.batch_size}-v{valid}-seed{seed}"

    def config(self, progress: bool) -> SFTConfig:
        return SFTConfig(epochs=self.epochs, batch_size=self.batch_size, max_valid=self.max_valid,
                         progress=progress)


CLASS_SFT = SFTSettings()  # "SFT for class": the tiny backbone, 2 epochs (timed in docs/teaching_guide.md)
SMOKE_SFT = SFTSettings(preset="micro", epochs=1, max_valid=50)  # the smoke runs' start: seconds


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
    """True when `path` holds an SFT run of this version whose training finished (results recorded, model
    saved); a folder of an older run-folder format is not one (it is left as it is)."""
    path = Path(path)
    if not (path / runs.CONFIG_FILE).is_file() or not (path / runs.MODEL_DIR / "config.json").is_file():
        return False
    if not runs.is_run_folder(path):
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


def load_or_train_sft(sft_run: str | Path, settings: SFTSettings = CLASS_SFT, seed: int = 0,
                      progress: bool = True) -> SFTStart:
    """Use the finished SFT run in `sft_run`, or train `settings` into a sibling folder named by them.

    Never fails because 02 ran with other settings: an existing finished run is used as it is (its settings
    are printed); a missing or unfinished one is left alone and the start is trained next to it.
    """
    from riser_lite.items.catalog import ItemSpace

    sft_run = Path(sft_run)
    trained_here = False
    if finished_sft_run(sft_run):
        path = sft_run
    else:
        path = sft_run.parent / settings.folder_name(seed)
        if not finished_sft_run(path):
            print(f"{sft_run} holds no finished SFT run: training {settings} into {path}")
            run_sft("synthetic", preset=settings.preset, config=settings.config(progress), out=path,
                    seed=seed)
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
