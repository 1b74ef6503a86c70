"""From a Hugging Face model folder through SFT, RL and evaluation, with the GPU options, on CPU.

The model is a Qwen2ForCausalLM (the architecture of Qwen2.5) built locally and saved with
`save_pretrained`, so the path is the one `--model Qwen/Qwen2.5-0.5B-Instruct` takes, without a download:
`riser-lite sft --model PATH --lora --mixed-precision bf16`, then `riser-lite rl
--lora` from that run, then `riser-lite evaluate` of the RL run.
"""

import json

import pytest
import torch
from test_sft import cycle_dataset

from riser_lab.cli import main
from riser_lite import runs
from riser_lite.data.native import save_dataset
from riser_lite.model.backbone import build_backbone
from riser_lite.sft import encode_examples, validation_loss


def test_hf_qwen2_folder_through_sft_rl_and_evaluation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = cycle_dataset()
    save_dataset(ds, tmp_path / "data")
    base, tok = build_backbone(ds, "micro", seed=3)
    assert type(base).__name__ == "Qwen2ForCausalLM"
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    tok.save_pretrained(tmp_path / "base")

    assert main(["sft", "--data", "native", "--path", str(tmp_path / "data"),
                 "--model", str(tmp_path / "base"), "--lora", "--mixed-precision", "bf16",
                 "--epochs", "2", "--batch-size", "8", "--out", str(tmp_path / "sft")]) == 0
    sft = runs.load_run(tmp_path / "sft")
    summary = sft.config["results"]["sft"]
    from riser_lite.model.pretrained import folder_sha256

    assert sft.config["backbone"] == {"pretrained": str(tmp_path / "base"),
                                      "sha256": folder_sha256(tmp_path / "base")}
    assert sft.config["sft"]["mixed_precision"] == "bf16" and summary["steps"] == 2 * 5
    valid = encode_examples(ds.splits["valid"], ds.catalog, sft.tokenizer, 10)
    # Validation runs without autocast, so the saved (merged) model reproduces the recorded best loss.
    assert validation_loss(sft.model, valid, sft.tokenizer.pad_token_id) == pytest.approx(
        summary["best_valid_loss"], rel=1e-5)

    assert main(["rl", "--run", str(tmp_path / "sft"), "--out", str(tmp_path / "rl"), "--lora",
                 "--steps", "2"]) == 0
    records = runs.read_metrics(tmp_path / "rl", "rl")
    assert [r["step"] for r in records] == [1, 2]
    rl = runs.load_run(tmp_path / "rl")
    changed = [k for k, v in rl.model.state_dict().items() if not torch.equal(v, sft.model.state_dict()[k])]
    assert changed and all("proj" in k for k in changed)  # LoRA on q/k/v/o, merged into those weights

    capsys.readouterr()
    assert main(["evaluate", "--run", str(tmp_path / "rl"), "--protocol", "exact"]) == 0
    result = json.loads((tmp_path / "rl" / "eval_test_exact.json").read_text())
    assert result["num_examples"] == 6 and len(result["ranks"]) == 6
    hits = sum(rank < 5 for rank in result["ranks"]) / 6  # HR@5 from the per-example ranks
    assert result["summaries"]["hr@5"]["value"] == pytest.approx(hits)
    assert (tmp_path / "rl" / "eval_test_exact.json").exists()
