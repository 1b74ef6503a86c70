"""Load times and sizes of the datasets (a measurement, not a test).

    python benchmarks/bench_data.py [--lastfm PATH]

Prints wall time per load (best of --repeats) and the load time relative to the bundled synthetic data.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from riser_lite.data import load_dataset


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lastfm", default=os.environ.get("RISER_LITE_LASTFM"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    size = sum(f.stat().st_size for f in (root / "data" / "synthetic").iterdir())
    rows = [("synthetic (bundled, with oracle regeneration)", lambda: load_dataset("synthetic"))]
    if args.lastfm:
        rows.append(("lastfm", lambda: load_dataset("lastfm", args.lastfm)))
    base = None
    print(f"bundled synthetic data on disk: {size / 1024:.0f} KiB")
    print(f"{'dataset':48s} {'best s':>8s} {'ratio':>7s}")
    for name, fn in rows:
        seconds = best_time(fn, args.repeats)
        base = base or seconds
        print(f"{name:48s} {seconds:8.2f} {seconds / base:7.2f}")


if __name__ == "__main__":
    main()
