"""A micro SFT run and its evaluation, for tests/test_distributed.py to launch under `torchrun`.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_job.py DATA OUT

DATA is a dataset saved with `riser_lite.data.native.save_dataset`; OUT the run folder. With --crash-after N
every process raises after optimizer step N (a deterministic interruption; the resume checkpoint of the
last `checkpoint_every` step is on disk). Evaluation (beam and exact protocols) writes
OUT/eval_test_<protocol>.json from the main process.
"""

import argparse
import sys

from riser_lite.eval.evaluate import evaluate_run
from riser_lite.runs import dataset_spec
from riser_lite.sft import SFTConfig, run_sft

# 36 training examples in global batches of 7: five full batches and one of a single example, so under two
# processes one process has an empty share once per epoch (the weight-0 path of `sft.step_share`).
CONFIG = SFTConfig(epochs=3, batch_size=7, lr=1e-2, patience=0, checkpoint_every=2, eval_batch_size=4,
                   progress=False, device="cpu")


class Interrupted(RuntimeError):
    pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--crash-after", type=int, default=None)
    args = parser.parse_args(argv)
    def crash(record):
        if args.crash_after is not None and record["event"] == "train" and record["step"] > args.crash_after:
            raise Interrupted(f"interrupted after step {args.crash_after}")

    run_sft(dataset_spec("native", args.data), preset="micro", config=CONFIG, out=args.out, seed=0,
            on_step=crash)
    for protocol in ("beam", "exact"):
        evaluate_run(args.out, "test", protocol, num_beams=6, ks=(1, 5), batch_size=4, num_bootstrap=50)
    return 0


if __name__ == "__main__":
    sys.exit(main())
