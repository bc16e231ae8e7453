"""The modality table for Recommend: random, image-only, text-only, each fusion, oracle (mean ± std over seeds).

Trains PPO + :class:`mmrl.MultimodalExtractor` on the *easy* Recommend configuration (32 px images,
4 categories x 4 colours; the learning test in tests/test_learning.py uses the same settings) for each
row and seed, evaluates the deterministic policy on 1,000 held-out episodes, and prints a Markdown table.
Results are appended to a JSON-lines file as they come, so an interrupted run resumes where it stopped.

Usage: ``python benchmarks/modality_table.py [--steps 200000] [--seeds 0 1 2] [--workers 2] [--out modality.jsonl]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mmrl.learning import EASY_RECOMMEND, evaluate_reference, train_and_evaluate

ROWS: dict[str, dict] = {
    "image only (film)": dict(fusion="film", modalities=("image",)),
    "text only (film)": dict(fusion="film", modalities=("text",)),
    "concat": dict(fusion="concat"),
    "gated": dict(fusion="gated"),
    "film": dict(fusion="film"),
    "cross_attention": dict(fusion="cross_attention"),
}


def _job(args: tuple[str, int, int]) -> dict:
    row, seed, steps = args
    start = time.time()
    result = train_and_evaluate(seed=seed, total_timesteps=steps, **ROWS[row])
    return {"row": row, "seed": seed, "steps": steps, "return": result, "seconds": round(time.time() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("modality.jsonl"))
    args = parser.parse_args()
    done = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            record = json.loads(line)
            done.add((record["row"], record["seed"], record["steps"]))
    jobs = [(row, seed, args.steps) for row in args.rows for seed in args.seeds if (row, seed, args.steps) not in done]
    with ProcessPoolExecutor(args.workers) as pool:
        for record in pool.map(_job, jobs):
            print(json.dumps(record), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(record) + "\n")

    records = [json.loads(line) for line in args.out.read_text().splitlines()]
    references = {name: evaluate_reference(name) for name in ("random", "oracle")}
    gap = references["oracle"] - references["random"]
    print(f"\nEasy Recommend {EASY_RECOMMEND}; PPO, {args.steps:,} steps per run; 1,000 evaluation episodes each\n")
    print("| policy | mean return ± std over seeds | share of random→oracle gap | seeds |")
    print("|---|---|---|---|")
    print(f"| random | {references['random']:.2f} | 0% | - |")
    for row in args.rows:
        values = [r["return"] for r in records if r["row"] == row and r["steps"] == args.steps]
        if not values:
            continue
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {row} | {mean:.2f} ± {std:.2f} | {100 * (mean - references['random']) / gap:.0f}% | {len(values)} |")
    print(f"| oracle | {references['oracle']:.2f} | 100% | - |")


if __name__ == "__main__":
    main()
