"""Counter-based random numbers for batched environments.

Every instance of a batched env draws from its own stream, addressed by a hash of
``(seed, episode, step, draw index)``. No generator state is shared between rows, so row ``i``
sees the same numbers whatever the batch size, whatever the other rows do and whatever the
device: the hash is integer arithmetic, identical on CPU and CUDA.

All values are int64 tensors holding unsigned 32-bit numbers; products are masked back to 32
bits, so the low-bias 32-bit integer hash (Chris Wellons' ``lowbias32``) is exact everywhere.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1
_MIX = 0x85EBCA6B
_INV_2_24 = 1.0 / (1 << 24)


def hash32(x: Tensor) -> Tensor:
    """Bijective 32-bit integer hash (``lowbias32``) of an int64 tensor of values in ``[0, 2**32)``."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def stream_key(seed: Tensor) -> Tensor:
    """Per-instance stream key from int64 seeds (any non-negative int64)."""
    return hash32(hash32(seed & MASK32) ^ ((seed >> 32) & MASK32))


def episode_key(stream: Tensor, episode: Tensor) -> Tensor:
    """Key of one episode of one instance: int64[B] from the stream key and the episode counter."""
    return hash32(stream ^ hash32(episode & MASK32))


def step_key(episode: Tensor, step: Tensor) -> Tensor:
    """Key of one step of one episode: int64[B]."""
    return hash32(episode ^ ((step * _GOLDEN) & MASK32))


@functools.lru_cache(maxsize=64)
def _draw_constants(offset: int, count: int, device: torch.device) -> Tensor:
    index = torch.arange(offset, offset + count, device=device, dtype=torch.int64)
    return (index * _MIX) & MASK32


def uniform(key: Tensor, count: int, offset: int = 0) -> Tensor:
    """``count`` independent uniforms in ``[0, 1)`` per row: float32[B, count].

    Draw ``j`` of a row is a function of ``(key, offset + j)`` alone, so callers reserve disjoint
    ``offset`` ranges for disjoint purposes. Floats have 24 random bits, exactly representable.
    """
    if torch.compiler.is_compiling():  # traced: the constants fold into the generated kernel
        constants = (torch.arange(offset, offset + count, device=key.device, dtype=torch.int64) * _MIX) & MASK32
    else:
        constants = _draw_constants(offset, count, key.device)
    bits = hash32(key[:, None] ^ constants[None, :])
    return (bits >> 8).to(torch.float32) * _INV_2_24


def randint(u: Tensor, high: Tensor | int) -> Tensor:
    """Map uniforms in ``[0, 1)`` to integers in ``[0, high)``; ``high`` is an int or a per-row tensor."""
    if isinstance(high, int):
        return (u * high).to(torch.int64).clamp_(0, high - 1)
    high = high.to(torch.int64)
    while high.dim() < u.dim():
        high = high.unsqueeze(-1)
    return torch.minimum((u * high.to(u.dtype)).to(torch.int64), high - 1).clamp_(min=0)


class Block(int):
    """A size in :class:`Draws` that always names a block of draws (a slice), even of one draw or none."""


class Draws:
    """Named, disjoint ranges of a row's uniform draws, laid out in the order they are given.

    ``draws = Draws(click=1, purchase=1, slate=Block(k))``: ``u = uniform(key, draws.count)``, then
    ``u[:, draws.click]`` is one draw per row (a size of 1 is a column index) and ``u[:, draws.slate]``
    a block (a :class:`Block` size, or any size other than 1, is a slice). Naming the ranges keeps a
    draw from being reused for two purposes, and adding one from shifting the others by hand.
    """

    def __init__(self, **sizes: int):
        offset = 0
        for name, size in sizes.items():
            if size < 0:
                raise ValueError(f"draw block {name!r} has a negative size: {size}")
            # plain attributes (constants to torch.compile's tracer)
            setattr(self, name, offset if size == 1 and not isinstance(size, Block) else slice(offset, offset + size))
            offset += size
        #: the number of draws a row takes
        self.count = offset
