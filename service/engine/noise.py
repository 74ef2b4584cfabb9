"""Initial noise: per-request seeded generators, variation seeds as a slerp of two noises."""

from __future__ import annotations

import torch


def slerp(t: float, a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation between two Gaussian noises; keeps the norm a sampler expects."""
    a_flat, b_flat = a.flatten(), b.flatten()
    cos = torch.dot(a_flat / a_flat.norm(), b_flat / b_flat.norm()).clamp(-1.0, 1.0)
    if 1.0 - cos.abs() < eps:  # (anti)parallel: lerp is exact enough and slerp would divide by ~0
        return (1 - t) * a + t * b
    omega = torch.acos(cos)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def initial_noise(
    shape: tuple[int, ...],
    generator: torch.Generator,
    variation_seed: int | None = None,
    variation_strength: float = 0.0,
) -> torch.Tensor:
    """Noise drawn from the request's generator, as diffusers' `randn_tensor` does on CPU.

    With a variation seed, the result is slerp(strength, noise(seed), noise(variation_seed)): strength 0
    is the seed's image, 1 the variation seed's, values between walk from one to the other.
    """
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    if variation_seed is not None and variation_strength > 0:
        other = torch.randn(shape, generator=torch.Generator().manual_seed(variation_seed), dtype=torch.float32)
        noise = slerp(variation_strength, noise, other)
    return noise
