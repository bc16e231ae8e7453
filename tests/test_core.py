"""Engine pieces on their own: counter-based RNG, sprite renderer, vocabulary and text space, packaging."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmrl.core import rng
from mmrl.core.renderer import SpriteRenderer
from mmrl.core.spaces import TextSpace, Vocabulary


def test_uniform_is_per_row_and_batch_invariant() -> None:
    seeds = torch.arange(100, dtype=torch.int64) * 7919 + 3
    keys = rng.step_key(rng.episode_key(rng.stream_key(seeds), torch.zeros(100, dtype=torch.int64)), torch.full((100,), 4))
    batch = rng.uniform(keys, 16)
    single = torch.cat([rng.uniform(keys[i : i + 1], 16) for i in range(100)])
    assert torch.equal(batch, single)
    assert torch.equal(rng.uniform(keys, 4, offset=12), batch[:, 12:16])
    assert float(batch.min()) >= 0.0 and float(batch.max()) < 1.0
    assert abs(float(batch.mean()) - 0.5) < 0.03
    # different rows, steps and episodes give different streams
    assert len(set(batch[:, 0].tolist())) > 95


def test_hash_matches_a_pure_python_reference() -> None:
    def lowbias32(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    values = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1]
    got = rng.hash32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [lowbias32(v) for v in values]


def test_randint_covers_range_and_never_reaches_high() -> None:
    u = torch.tensor([0.0, 0.5, 1.0 - 2**-24])
    assert rng.randint(u, 1000).tolist() == [0, 500, 999]
    assert rng.randint(u, torch.tensor([3, 3, 3])).tolist() == [0, 1, 2]


def _naive_render(atlas: np.ndarray, ids: np.ndarray, rows: int, cols: int, size: int) -> np.ndarray:
    tile = atlas.shape[-1]
    out = np.zeros((ids.shape[0], 3, size, size), dtype=np.uint8)
    top, left = (size - rows * tile) // 2, (size - cols * tile) // 2
    for b in range(ids.shape[0]):
        for cell in range(rows * cols):
            r, c = divmod(cell, cols)
            out[b, :, top + r * tile : top + (r + 1) * tile, left + c * tile : left + (c + 1) * tile] = atlas[ids[b, cell]]
    return out


@pytest.mark.parametrize("tile, rows, cols, size", [(8, 2, 2, 16), (16, 3, 2, 48), (7, 2, 3, 24), (21, 3, 3, 64)])
def test_renderer_matches_a_loop_reference(tile: int, rows: int, cols: int, size: int) -> None:
    generator = np.random.default_rng(0)
    atlas = generator.integers(0, 256, size=(10, 3, tile, tile), dtype=np.uint8)
    ids = generator.integers(0, 10, size=(5, rows * cols))
    renderer = SpriteRenderer(torch.from_numpy(atlas), rows, cols, size)
    got = renderer.render(torch.from_numpy(ids)).numpy()
    np.testing.assert_array_equal(got, _naive_render(atlas, ids, rows, cols, size))


@pytest.mark.parametrize("tile, rows, cols, size", [(8, 8, 8, 64), (8, 6, 6, 64), (8, 2, 2, 20), (7, 2, 3, 24)])
def test_paste_over_a_background_matches_the_loop_reference(tile: int, rows: int, cols: int, size: int) -> None:
    generator = np.random.default_rng(1)
    atlas = generator.integers(0, 256, size=(10, 3, tile, tile), dtype=np.uint8)
    background = generator.integers(0, 10, size=rows * cols)
    cells = np.stack([generator.permutation(rows * cols)[:3] for _ in range(6)])  # distinct cells per row
    cells[0, 1] = cells[4, 2] = -1  # draws nothing
    sprites = generator.integers(0, 10, size=(6, 3))
    ids = np.tile(background, (6, 1))
    for b, m in zip(*np.nonzero(cells >= 0)):
        ids[b, cells[b, m]] = sprites[b, m]
    renderer = SpriteRenderer(torch.from_numpy(atlas), rows, cols, size)
    images = renderer.background(torch.from_numpy(background)).expand(6, -1, -1, -1).clone(memory_format=torch.contiguous_format)
    got = renderer.paste(images, torch.from_numpy(cells), torch.from_numpy(sprites))
    assert got is images
    np.testing.assert_array_equal(got.numpy(), _naive_render(atlas, ids, rows, cols, size))
    with pytest.raises(ValueError, match=rf"images must be uint8\[B, 3, {size}, {size}\]; got torch.float32"):
        renderer.paste(images.float(), torch.from_numpy(cells), torch.from_numpy(sprites))


def test_renderer_rejects_bad_atlas_and_grid() -> None:
    with pytest.raises(ValueError, match=r"atlas must be uint8\[S, 3, T, T\]"):
        SpriteRenderer(torch.zeros(2, 3, 8, 8), 1, 1, 8)
    with pytest.raises(ValueError, match="does not fit"):
        SpriteRenderer(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 3, 3, 16)


def test_vocabulary_round_trip_and_errors() -> None:
    vocab = Vocabulary(["hello", "red", "shirt", "red"])
    assert len(vocab) == 5 and vocab.words[:2] == ("<pad>", "<unk>")
    ids = vocab.encode("hello red shirt", length=6)
    assert ids.tolist() == [2, 3, 4, 0, 0, 0]
    assert vocab.decode(ids) == "hello red shirt"
    assert vocab.encode("hello blue", strict=False).tolist() == [2, 1]
    with pytest.raises(KeyError, match="'blue' is not in the vocabulary"):
        vocab.encode("hello blue")
    with pytest.raises(ValueError, match="token id 9 is outside the vocabulary"):
        vocab.decode([2, 9])
    with pytest.raises(ValueError, match="more than the length 2"):
        vocab.encode("hello red shirt", length=2)
    with pytest.raises(ValueError, match="without spaces"):
        Vocabulary(["two words"])


def test_text_space_carries_vocabulary_and_pickles() -> None:
    vocab = Vocabulary(["a", "b"])
    space = TextSpace(vocab, 5)
    assert space.contains(np.array([2, 3, 0, 0, 0], dtype=np.int64))
    assert not space.contains(np.array([2, 4, 0, 0, 0], dtype=np.int64))
    again = pickle.loads(pickle.dumps(space))
    assert again == space and again.vocabulary.words == vocab.words
    assert TextSpace(Vocabulary(["a", "c"]), 5) != space


def test_envs_and_agents_are_not_top_level_packages(tmp_path) -> None:
    """After install, the env and agent code lives under mmrl.* only (no clash with other packages)."""
    code = (
        "import importlib.util, mmrl.envs.recommend, mmrl.agents.reference;"
        "print(importlib.util.find_spec('envs'), importlib.util.find_spec('agents'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None None"
