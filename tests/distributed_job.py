"""Micro SFT and RL runs with their evaluation, for tests/test_distributed*.py to launch under `torchrun`.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_job.py sft DATA OUT
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_job.py rl SFT_RUN OUT

`sft`: DATA is a dataset saved with `riser_lite.data.native.save_dataset`; OUT the run folder; evaluation
(beam and exact protocols) then writes OUT/eval_test_<protocol>.json from the main process. `rl`: a short
RISER run from the SFT run folder SFT_RUN. With --crash-after N every process raises after optimizer step
N (SFT) or RL step N: a deterministic interruption, after which the last checkpoint is on disk.
"""

import argparse
import sys

from riser_lab.cli import shutdown
from riser_lite.eval.evaluate import evaluate_run
from riser_lite.rl.config import RLConfig
from riser_lite.rl.trainer import train_rl
from riser_lite.runs import dataset_spec
from riser_lite.sft import SFTConfig, run_sft

# 36 training examples in global batches of 7: five full batches and one of a single example, so under two
# processes one process has an empty share once per epoch (the weight-0 path of `sft.step_share`).
SFT_CONFIG = SFTConfig(epochs=3, batch_size=7, lr=1e-2, patience=0, checkpoint_every=2, progress=False)
# ReRe-style beam rollouts with RISER's pairs and certainty weights: beam search is deterministic, so the
# rollouts of a prompt do not depend on which process draws them (sampled draws do; see docs/scale.md).
RL_CONFIG = RLConfig(algo="rere", use_pairs=True, use_certainty_weights=True, group_size=4, steps=4,
                     prompts_per_step=6, lr=1e-3, eval_every=2, eval_examples=6)


class Interrupted(RuntimeError):
    pass


def crash_after(step: int | None, event: str | None):
    def crash(record):
        if step is not None and record.get("event", None) == event and record["step"] > step:
            raise Interrupted(f"interrupted after step {step}")
    return crash


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["sft", "rl"])
    parser.add_argument("source", help="sft: a saved dataset folder; rl: an SFT run folder")
    parser.add_argument("out")
    parser.add_argument("--crash-after", type=int, default=None)
    args = parser.parse_args(argv)
    if args.stage == "sft":
        run_sft(dataset_spec("native", args.source), preset="micro", config=SFT_CONFIG, out=args.out, seed=0,
                on_step=crash_after(args.crash_after, "train"))
        for protocol in ("beam", "exact"):
            evaluate_run(args.out, "test", protocol, num_beams=6, ks=(1, 5), batch_size=4, num_bootstrap=50)
    else:
        train_rl(args.source, RL_CONFIG, args.out, on_step=crash_after(args.crash_after, None))
    shutdown()  # every process exits after the others are done with the process group
    return 0


if __name__ == "__main__":
    sys.exit(main())
