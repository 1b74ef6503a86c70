"""Same seed, same numbers: a fixed default torch thread count, recorded in the run; "auto" on request."""

import os

import pytest
import torch

from riser_lab import demo
from riser_lab.cli import main
from riser_lab.compare import CompareConfig
from riser_lab.demo import run_demo
from riser_lite import runs

TIMES = ("time_s", "step_time_s", "rollout_time_s", "update_time_s", "eval_time_s")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def demo_threads(monkeypatch, tmp_path, load: float, **config) -> int:
    """The torch thread count the demo's first stage runs with, under a given load average on 2 cores."""
    chosen = []

    def first_stage_only(config, out, log, timer):
        with timer("sft"):
            chosen.append(torch.get_num_threads())
        return {}

    monkeypatch.setattr(demo, "_run_stages", first_stage_only)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    torch.set_num_threads(2)
    run_demo(CompareConfig.demo(**config), tmp_path)
    return chosen[0]


def test_the_demo_thread_count_does_not_depend_on_the_load(monkeypatch, tmp_path, restore_threads):
    assert demo_threads(monkeypatch, tmp_path, 0.1) == demo_threads(monkeypatch, tmp_path, 9.0) == 1
    assert demo_threads(monkeypatch, tmp_path, 0.1, threads=2) == 2
    assert demo_threads(monkeypatch, tmp_path, 0.1, threads="auto") == 2  # by the load only when asked
    assert demo_threads(monkeypatch, tmp_path, 9.0, threads="auto") == 1
    assert demo_threads(monkeypatch, tmp_path, 9.0, threads=0) == 1  # 0: "auto", as CompareConfig has it
    with pytest.raises(ValueError, match="threads must be"):
        CompareConfig(threads=-1).validate()


def sft_and_rl(small_data, out, start_threads: int) -> tuple[dict, list[dict]]:
    """SFT then RL through the command line, from a process whose torch used `start_threads` threads."""
    torch.set_num_threads(start_threads)
    assert main(["sft", "--path", str(small_data), "--model", "micro", "--epochs", "1", "--batch-size", "16",
                 "--out", str(out / "sft")]) == 0
    assert main(["rl", "--run", str(out / "sft"), "--out", str(out / "rl"), "--steps", "2"]) == 0
    weights = {stage: runs.file_sha256(out / stage / "model" / "model.safetensors")
               for stage in ("sft", "rl")}
    records = [{k: v for k, v in r.items() if k not in TIMES} for r in runs.read_metrics(out / "rl")]
    return weights, records


def test_two_runs_with_the_same_seed_match(small_data, tmp_path, restore_threads, capsys):
    first = sft_and_rl(small_data, tmp_path / "a", start_threads=2)
    second = sft_and_rl(small_data, tmp_path / "b", start_threads=1)
    assert first == second  # bit-identical weights and identical RL records
    for stage in ("sft", "rl"):
        assert runs.read_config(tmp_path / "a" / stage)["runtime"]["threads"] == runs.DEFAULT_THREADS == 1
