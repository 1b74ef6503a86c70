"""Run folders: bit-identical round trip, atomic writes, resume checkpoints, metrics, no pickle."""

import ast
import json
import os
from pathlib import Path

import pytest
import torch

import riser_lite
from riser_lite import runs
from riser_lite.data.types import Example, RecDataset
from riser_lite.model.backbone import add_lora, build_backbone

TITLES = ["Red Apple", "Blue Moon", "Green Field", "Silver Lake", "Golden Gate", "Quiet Night"]


def logits(model, tok, text="Red Apple\nBlue Moon\n"):
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([tok(text)["input_ids"]])).logits


def test_run_round_trip_gives_identical_logits(tmp_path):
    model, tok = build_backbone(TITLES, "micro", seed=1)
    spec = runs.dataset_spec("synthetic", None, seed=0, max_history=10)
    runs.save_run(tmp_path, model, tok, {"data": spec, "seed": 1})
    run = runs.load_run(tmp_path)
    assert torch.equal(logits(run.model, run.tokenizer), logits(model, tok))
    assert run.tokenizer("Quiet Night\n")["input_ids"] == tok("Quiet Night\n")["input_ids"]
    assert run.tokenizer.padding_side == "left"
    assert run.config["data"] == spec and run.config["seed"] == 1
    assert run.config["model"]["attention"] == "eager"
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.bin"))


def test_lora_runs_are_saved_merged(tmp_path):
    model, tok = build_backbone(TITLES, "micro", seed=1)
    wrapped = add_lora(model, r=2, alpha=4.0)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.fill_(0.05)
    expected = logits(wrapped, tok)
    runs.save_run(tmp_path, wrapped, tok)
    run = runs.load_run(tmp_path)
    assert "lora" not in " ".join(run.model.state_dict())
    torch.testing.assert_close(logits(run.model, run.tokenizer), expected, atol=1e-5, rtol=1e-4)
    assert any("lora_B" in n for n, _ in wrapped.named_parameters())  # the training model keeps its adapters


def test_an_interrupted_model_swap_still_loads(tmp_path):
    model, tok = build_backbone(TITLES, "micro", seed=1)
    runs.save_run(tmp_path, model, tok)
    os.replace(tmp_path / "model", tmp_path / "model.old")  # crash between the two renames
    assert torch.equal(logits(runs.load_run(tmp_path).model, tok), logits(model, tok))


def test_load_run_explains_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        runs.load_run(tmp_path)
    runs.update_config(tmp_path, seed=0)
    with pytest.raises(FileNotFoundError, match="no saved model"):
        runs.load_run(tmp_path)


def test_update_config_merges_sections_and_rejects_non_json(tmp_path):
    runs.update_config(tmp_path, results={"sft": {"loss": 1.0}}, seed=3)
    config = runs.update_config(tmp_path, results={"rl": {"hr": 0.5}})
    assert config["results"] == {"sft": {"loss": 1.0}, "rl": {"hr": 0.5}} and config["seed"] == 3
    assert json.loads((tmp_path / "config.json").read_text()) == config
    with pytest.raises(TypeError):
        runs.update_config(tmp_path, bad=object())
    assert json.loads((tmp_path / "config.json").read_text()) == config  # the old file is intact


def test_load_run_dataset_rebuilds_the_recorded_data(tmp_path):
    from riser_lite.data.native import save_dataset

    catalog = {i: t for i, t in enumerate(TITLES)}
    splits = {"train": [Example("u1", (0, 1), 2), Example("u1", (0, 1, 2), 3)],
              "valid": [Example("u2", (3,), 4)], "test": [Example("u3", (4,), 5)]}
    save_dataset(RecDataset("toy", catalog, splits), tmp_path / "data")
    model, tok = build_backbone(TITLES, "micro")
    runs.save_run(tmp_path / "run", model, tok, {"data": runs.dataset_spec("native", tmp_path / "data")})
    ds = runs.load_run_dataset(runs.load_run(tmp_path / "run"))
    assert ds.catalog == catalog and ds.splits == splits
    runs.save_run(tmp_path / "mem", model, tok, {"data": {"source": None, "name": "toy"}})
    with pytest.raises(ValueError, match="no data spec"):
        runs.load_run_dataset(tmp_path / "mem")


def test_checkpoint_round_trip_and_pointer(tmp_path):
    weights = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    objects = {"optimizer": {"state": {0: {"exp_avg": torch.ones(2), "step": torch.tensor(3.0)}},
                             "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]},
               "rng": {"torch": torch.get_rng_state()}}
    assert runs.load_checkpoint(tmp_path, "sft") is None
    runs.save_checkpoint(tmp_path, "sft", runs.Checkpoint(5, {"weights": weights}, objects, {"epoch": 1}))
    runs.save_checkpoint(tmp_path, "sft", runs.Checkpoint(9, {"weights": weights}, objects, {"epoch": 2}))
    (tmp_path / "state" / "sft" / ".ckpt-00000012.tmp").mkdir()  # a checkpoint cut short by a crash
    ckpt = runs.load_checkpoint(tmp_path, "sft")
    assert ckpt.step == 9 and ckpt.meta == {"epoch": 2}
    assert all(torch.equal(ckpt.tensors["weights"][k], v) for k, v in weights.items())
    assert torch.equal(ckpt.objects["optimizer"]["state"][0]["exp_avg"], torch.ones(2))
    assert ckpt.objects["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(ckpt.objects["rng"]["torch"], objects["rng"]["torch"])
    kept = sorted(p.name for p in (tmp_path / "state" / "sft").glob("ckpt-*"))
    assert kept == ["ckpt-00000009"]  # older complete checkpoints are pruned
    runs.clear_checkpoints(tmp_path, "sft")
    assert runs.load_checkpoint(tmp_path, "sft") is None


def test_metrics_are_flushed_per_record_and_truncated_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = runs.MetricsLog(path)
    for step in range(1, 5):
        log.write({"stage": "sft", "step": step, "loss": 1.0 / step})
        assert len(runs.read_metrics(path)) == step  # readable before close: a crash loses nothing
    log.write({"stage": "rl", "step": 9})
    log.close()
    with open(path, "a") as handle:
        handle.write('{"stage": "sft", "step": 5, "lo')  # a line cut by a crash
    assert [r["step"] for r in runs.read_metrics(tmp_path, "sft")] == [1, 2, 3, 4]
    runs.truncate_metrics(path, "sft", after_step=2)
    assert [(r["stage"], r["step"]) for r in runs.read_metrics(path)] == [("sft", 1), ("sft", 2), ("rl", 9)]


def test_no_pickle_anywhere_in_the_package():
    """Checkpoints are safetensors/JSON; every torch.load passes weights_only=True; no pickle import."""
    offenders = []
    for path in Path(riser_lite.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib") for n in names):
                    offenders.append(f"{path.name}:{node.lineno} imports pickle")
            func = getattr(node, "func", None)
            if isinstance(node, ast.Call) and isinstance(func, ast.Attribute) and func.attr == "load" \
                    and isinstance(func.value, ast.Name) and func.value.id == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                           and k.value.value is True for k in node.keywords)
                if not safe:
                    offenders.append(f"{path.name}:{node.lineno} torch.load without weights_only=True")
    assert not offenders, offenders
