"""Command line of the synthetic generator: write a dataset in the native format and print its figures.

``python -m riser_lab.synthetic --out data/synthetic --seed 0`` writes the bundled default.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from riser_lite.data.synthetic.generator import write_synthetic
from riser_lite.data.types import SPLITS, RecDataset
from riser_lite.eval.oracle import oracle_hit_rate, oracle_ndcg, popularity_hit_rate, prompt_oracle_hit_rate


def summary(ds: RecDataset, ks: Sequence[int] = (1, 5, 10, 20), split: str = "test") -> str:
    """A few lines describing the dataset and its reference scores on `split`."""
    lines = [f"{ds.name}: {ds.num_items} items; " + ", ".join(
        f"{s} {len(ds.splits[s])} rows / {len(ds.users(s))} users" for s in SPLITS)]
    if ds.oracle is not None:
        for k in ks:
            hr, ndcg = oracle_hit_rate(ds, split, k), oracle_ndcg(ds, split, k)
            pop, prompt = popularity_hit_rate(ds, split, k), prompt_oracle_hit_rate(ds, split, k)
            lines.append(f"  {split} @{k:<2}  oracle HR {hr.expected:.3f} (realised {hr.realised:.3f}), "
                         f"NDCG {ndcg.expected:.3f}  |  prompt oracle HR {prompt.expected:.3f}  |  "
                         f"popularity HR {pop.expected:.3f} (realised {pop.realised:.3f})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m riser_lab.synthetic",
                                     description="Write the default synthetic dataset in the native format.")
    parser.add_argument("--out", type=Path, default=Path("data/synthetic"), help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-oracle", action="store_true",
                        help="also write oracle_<split>.jsonl (tens of MB; load_synthetic can recompute it)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    ds = write_synthetic(args.out, seed=args.seed, include_oracle=args.with_oracle)
    elapsed = time.perf_counter() - start
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(summary(ds))
    print(f"generated and wrote {args.out} in {elapsed:.2f} s ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
