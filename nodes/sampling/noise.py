"""Noise sources for sampling, drawn as ComfyUI draws them so that a seed gives the same image.

A *noise sampler* is a callable ``noise_sampler(sigma, sigma_next) -> Tensor`` returning
standard normal noise shaped like the latent [B, C, h, w], for the step from ``sigma`` to
``sigma_next``.  :func:`make_noise_sampler` builds the one a sampler asks for (its
``SamplerSpec.noise``, one of :data:`NOISE_KINDS`):

- ``"gaussian"`` (:class:`GaussianNoise`): independent draws from one generator seeded with
  the seed; ancestral samplers, ddpm, lcm, and ComfyUI's er_sde, seeds_2/3, sa_solver.
- ``"brownian"`` (:class:`BrownianTreeNoise`): increments of one Brownian motion from
  torchsde's ``BrownianTree``, on the CPU, seeded with the seed, over [smallest positive
  sigma, largest sigma] of the run; the SDE samplers (dpmpp_sde, dpmpp_2m_sde(_heun),
  dpmpp_3m_sde).
- ``"brownian_gpu"``: the same tree kept on the latent's device (ComfyUI's ``*_gpu`` names);
  on the CPU it is identical to ``"brownian"``, on CUDA it follows CUDA's generator.

The starting noise (:func:`initial_noise`) is drawn on the CPU and the SDE noise kept on the
CPU, so for those a seed means the same noise on any device; the per-step Gaussian noise is
drawn on the latent's device, because ComfyUI draws it there.
"""

from __future__ import annotations

import warnings

import torch
import torchsde

# torchsde rounds the tree's ends and then warns that a query at the run's own largest sigma
# lies past the rounded end (and clamps it, as ComfyUI's runs do too): harmless, but it
# would be logged for every new sigma range
warnings.filterwarnings("ignore", message=r"Should have (ta|tb)(>=t0|<=t1) but got", module=r"torchsde\.")


def initial_noise(shape: torch.Size | tuple[int, ...], seed: int,
                  batch_index: list[int] | None = None) -> torch.Tensor:
    """The starting noise for ``seed``: ``torch.randn(shape)`` from a CPU generator
    seeded with ``seed``, float32 on the CPU (ComfyUI's ``prepare_noise`` for a batch).

    ``batch_index`` (a LATENT's, set by LatentFromBatch / RepeatLatentBatch) names the batch
    positions the items came from: one ``[1, ...]`` draw is made per position 0..max in
    turn and item i gets the draw of position ``batch_index[i]``, as ComfyUI does, so an
    image picked out of a batch keeps its noise.
    """
    generator = torch.Generator("cpu").manual_seed(int(seed))
    if batch_index is None:
        return torch.randn(tuple(shape), generator=generator)
    if len(batch_index) != shape[0] or min(batch_index, default=0) < 0:
        raise ValueError(f"batch_index {batch_index!r} does not fit a batch of {shape[0]}")
    one = (1, *tuple(shape)[1:])
    draws = [torch.randn(one, generator=generator) for _ in range(max(batch_index) + 1)]
    return torch.cat([draws[i] for i in batch_index])


class GaussianNoise:
    """Independent N(0, 1) noise per call (ancestral samplers), as ComfyUI's
    ``default_noise_sampler`` draws it.

    ``like``: gives the noise's shape [B, C, h, w], dtype and device.  Each call draws
    ``torch.randn(like.shape)`` in ``like``'s dtype from one generator on ``like``'s device
    seeded with ``seed``: ComfyUI draws this noise on the sampling device (unlike the
    starting noise, which it always draws on the CPU), so on the CPU its draws are
    reproduced exactly and on CUDA the same seed follows CUDA's generator as it does there.
    """

    def __init__(self, like: torch.Tensor, seed: int) -> None:
        self.shape = tuple(like.shape)
        self.dtype = like.dtype
        self.device = like.device
        self.generator = torch.Generator(like.device).manual_seed(int(seed))

    def __call__(self, sigma: float | torch.Tensor, sigma_next: float | torch.Tensor) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, dtype=self.dtype, device=self.device)


class BrownianTreeNoise:
    """Normalised increments ``(W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|)`` of one
    Brownian motion W indexed by sigma itself, from ``torchsde.BrownianTree``.

    This is what ComfyUI's SDE samplers draw (k-diffusion's ``BrownianTreeNoiseSampler`` over
    ``BatchedBrownianTree``): one tree for the whole batch tensor, entropy = the seed, spanning
    ``[sigma_min, sigma_max]`` as float32 0-d tensors, W(sigma_min) = 0.  Because the values
    are those of one path, sub-steps (dpmpp_sde's two draws per step) are correlated the way
    Brownian increments are.  torchsde fills the path in lazily and its answers can depend on
    the order of queries, so a sampler reproduces ComfyUI only if it asks for the same
    intervals in the same order, as ours do.

    ``like``: gives the noise's shape [B, C, h, w], dtype and device.  ``on_cpu``: keep the
    tree on the CPU (ComfyUI's default) or on ``like``'s device (its ``*_gpu`` samplers).
    """

    def __init__(self, like: torch.Tensor, seed: int, sigma_min: float, sigma_max: float,
                 on_cpu: bool = True) -> None:
        self.shape = tuple(like.shape)
        self.dtype = like.dtype
        self.device = like.device
        self.tree_device = torch.device("cpu") if on_cpu else like.device
        lo, hi = self._times(sigma_min, sigma_max)
        # ComfyUI sorts the two ends; with sigma_min < sigma_max the sign it keeps is +1
        self.sign = 1.0 if float(sigma_min) < float(sigma_max) else -1.0
        w0 = torch.zeros(self.shape, dtype=like.dtype, device=self.tree_device)
        self.tree = torchsde.BrownianTree(lo, w0, hi, entropy=int(seed))

    def _times(self, a: float | torch.Tensor, b: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``a`` and ``b`` as float32 0-d tensors on the tree's device, smaller first: the
        tree is always queried at float32 times, as ComfyUI queries it."""
        ta = torch.as_tensor(float(a), dtype=torch.float32, device=self.tree_device)
        tb = torch.as_tensor(float(b), dtype=torch.float32, device=self.tree_device)
        return (ta, tb) if ta < tb else (tb, ta)

    def __call__(self, sigma: float | torch.Tensor, sigma_next: float | torch.Tensor) -> torch.Tensor:
        lo, hi = self._times(sigma, sigma_next)
        if lo == hi:
            # an empty interval has no increment (ComfyUI would divide 0 by 0 here)
            return torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        # stepping down in sigma is the increment W(sigma_next) - W(sigma) = -(W(hi) - W(lo))
        direction = -1.0 if float(sigma) > float(sigma_next) else 1.0
        w = self.tree(lo, hi) * (self.sign * direction)
        return (w / (hi - lo).sqrt()).to(device=self.device, dtype=self.dtype)


NOISE_KINDS: tuple[str, ...] = ("gaussian", "brownian", "brownian_gpu")


def sde_sigma_range(sigmas: torch.Tensor) -> tuple[float, float]:
    """The interval a run's Brownian tree spans: (smallest positive sigma, largest sigma) of
    the sigmas [steps + 1] the sampler is given (after denoise / start and end steps)."""
    positive = sigmas[sigmas > 0]
    if positive.numel() == 0:
        raise ValueError("an SDE sampler needs at least one positive sigma")
    return float(positive.min()), float(sigmas.max())


def make_noise_sampler(kind: str | None, like: torch.Tensor, seed: int,
                       sigmas: torch.Tensor) -> GaussianNoise | BrownianTreeNoise | None:
    """The noise sampler of ``kind`` (a ``SamplerSpec.noise``, see :data:`NOISE_KINDS`) for a
    run from ``like`` (the noised starting latent [B, C, h, w]) along ``sigmas`` [steps + 1]
    with ``seed``; None for deterministic samplers (``kind`` None)."""
    if kind is None:
        return None
    if kind == "gaussian":
        return GaussianNoise(like, seed)
    if kind in ("brownian", "brownian_gpu"):
        sigma_min, sigma_max = sde_sigma_range(sigmas)
        return BrownianTreeNoise(like, seed, sigma_min, sigma_max, on_cpu=kind == "brownian")
    raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
