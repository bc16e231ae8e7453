"""The modality table for Recommend: random, image-only, text-only, each fusion, oracle (mean ± std over seeds).

Trains each row and seed as ``python -m mmrl.train experiment=recommend`` would (the same composed config:
PPO + :class:`mmrl.MultimodalExtractor` on the easy Recommend setting, 32 px images, 4 categories x 4 colours,
with the row's ``extractor=`` / ``extractor.modalities=`` overrides), evaluates the deterministic policy on
1,000 held-out episodes (:mod:`mmrl.learning`), and prints a Markdown table. Results are appended to a
JSON-lines file as they come, so an interrupted run resumes where it stopped.

Usage: ``python benchmarks/modality_table.py [--steps 240000] [--seeds 0 1 2] [--workers 2] [--out modality.jsonl]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mmrl.learning import reference_return, train_and_evaluate
from mmrl.train import compose_config

EXPERIMENT = "experiment=recommend"
#: row -> its overrides on top of the experiment
ROWS: dict[str, list[str]] = {
    "image only (film)": ["extractor=film", "extractor.modalities=[image]"],
    "text only (film)": ["extractor=film", "extractor.modalities=[text]"],
    "concat": ["extractor=concat"],
    "gated": ["extractor=gated"],
    "film": ["extractor=film"],
    "cross_attention": ["extractor=cross_attention"],
}


def _job(args: tuple[str, int, int]) -> dict:
    row, seed, steps = args
    start = time.time()
    config = compose_config([EXPERIMENT, f"seed={seed}", f"total_timesteps={steps}", *ROWS[row]])
    result = train_and_evaluate(config)
    return {"row": row, "seed": seed, "steps": steps, "return": result, "seconds": round(time.time() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=compose_config([EXPERIMENT]).total_timesteps)
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
    config = compose_config([EXPERIMENT])
    references = {name: reference_return(name, config) for name in ("random", "oracle")}
    gap = references["oracle"] - references["random"]
    print(f"\nEasy Recommend {config.env.options}; PPO, {args.steps:,} steps per run; 1,000 evaluation episodes each\n")
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
