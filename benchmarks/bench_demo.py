"""Where the demo's time goes: wall and CPU time per stage, the RL split, and a profile.

    python benchmarks/bench_demo.py --quick                 # the `riser-lite demo --quick` sizes
    python benchmarks/bench_demo.py                         # default sizes (about 10 minutes)
    python benchmarks/bench_demo.py --quick --profile 20    # plus the 20 costliest functions

Runs `riser_lab.demo.run_demo` once (into a temporary folder unless --out is given) and prints:
- each stage's wall time, process CPU time, torch threads, and its share of the total;
- for the RL stages, the share of their time spent drawing rollouts, updating the policy and validating
  (from the `rollout_time_s` / `update_time_s` / `eval_time_s` of each step's metrics record);
- with --profile N, the N functions of riser_lite, transformers and torch with the largest cumulative time
  under cProfile (the profiler adds a few percent; stage shares are measured in the same run).

CPU time is the honest figure on a shared machine: with 1 thread it is close to the idle wall time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
from pathlib import Path

from riser_lab.compare import CompareConfig
from riser_lab.demo import run_demo
from riser_lite.runs import read_metrics


def stage_table(results: dict) -> list[str]:
    total = sum(results["stages"].values())
    lines = [f"{'stage':<12} {'wall s':>8} {'cpu s':>8} {'threads':>7} {'share':>6}"]
    for name, seconds in results["stages"].items():
        cpu = results["stages_cpu"][name]
        lines.append(f"{name:<12} {seconds:8.1f} {cpu:8.1f} {results['threads'][name]:7d} "
                     f"{seconds / total:6.1%}")
    lines.append(f"{'total':<12} {total:8.1f} {sum(results['stages_cpu'].values()):8.1f}")
    return lines


def rl_split(out: Path, algos, seed: int) -> list[str]:
    lines = ["share of the RL step time:",
             f"{'rl run':<12} {'rollouts':>9} {'updates':>8} {'validate':>9} {'other':>6}"]
    for algo in algos:
        records = read_metrics(out / algo / f"seed{seed}", stage="rl")
        step = sum(r["step_time_s"] for r in records)
        parts = [sum(r[k] for r in records) for k in ("rollout_time_s", "update_time_s", "eval_time_s")]
        shares = [p / step for p in parts] + [1 - sum(parts) / step]
        lines.append(f"{algo:<12} " + " ".join(f"{s:9.1%}" if i == 0 else f"{s:8.1%}"
                                                for i, s in enumerate(shares)))
    return lines


def top_functions(profile: cProfile.Profile, count: int) -> str:
    stream = io.StringIO()
    stats = pstats.Stats(profile, stream=stream).sort_stats("cumulative")
    stats.print_stats(r"riser_lite|transformers|torch", count)
    return stream.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the --quick sizes of `riser-lite demo`")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: chosen by load per stage)")
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest functions")
    parser.add_argument("--out", default=None, help="demo folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = CompareConfig.demo(quick=args.quick, threads=args.threads, seed=args.seed, seeds=(args.seed,),
                                progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        profile = cProfile.Profile() if args.profile else None
        if profile is not None:
            profile.enable()
        results = run_demo(config, out, overwrite=True, log=lambda line: None)
        if profile is not None:
            profile.disable()
        print(f"demo {'--quick' if args.quick else '(default sizes)'}: budget {results['budget']}")
        print("\n".join(stage_table(results)))
        print()
        print("\n".join(rl_split(out, config.variants, args.seed)))
        if profile is not None:
            print(top_functions(profile, args.profile))


if __name__ == "__main__":
    main()
