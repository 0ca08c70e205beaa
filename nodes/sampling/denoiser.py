"""Model wrappers: a UNet's eps or v output -> denoised x0, and classifier-free guidance.

The UNet is any callable ``unet(x_in, timestep, **cond) -> out`` with ``x_in`` [B, C, h, w]
the variance-preserving input, ``timestep`` float [B] (training timestep units, 0..N-1) and
``cond`` keyword tensors such as ``context`` [B, T, D] (cross-attention) and ``y`` [B, A]
(SDXL's pooled/size vector).  This is k-diffusion's CompVisDenoiser / CompVisVDenoiser idea.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from .noise_schedule import DiscreteSchedule
from .regions import CondRegion, add_area_twins, predict_regions

UNet = Callable[..., torch.Tensor]
PREDICTIONS = ("eps", "v", "x0", "lcm")
LCM_SIGMA_DATA = 0.5
LCM_TIMESTEP_SCALING = 10.0


def _view(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


class DiscreteDenoiser:
    """Turns a discrete-time UNet into ``D(x, sigma) -> x0``.

    For x = x0 + sigma * eps: the UNet sees c_in * x with c_in = 1 / sqrt(sigma^2 + 1) at
    timestep t = ``schedule.timestep(sigma)``, and by ``prediction``
      "eps":  D = x - sigma * eps_hat
      "v":    D = x / (sigma^2 + 1) - v_hat * sigma / sqrt(sigma^2 + 1)
              (v = alpha * eps - sigma_vp * x0 in VP units; Salimans & Ho 2022,
              "Progressive Distillation", sec. 4)
      "x0":   D = the UNet's output itself
      "lcm":  D = c_skip * x + c_out * (x - sigma * eps_hat), the consistency-model
              boundary condition with c_skip = sd^2 / (T^2 + sd^2),
              c_out = T / sqrt(T^2 + sd^2), T = 10 t, sd = 0.5 (Luo et al. 2023,
              "Latent Consistency Models"; ComfyUI's LCM constants).
    ``quantize_timesteps`` rounds to the nearest training timestep, as ComfyUI does; False
    interpolates in log-sigma, as k-diffusion does.
    """

    def __init__(self, unet: UNet, schedule: DiscreteSchedule, prediction: str = "eps",
                 quantize_timesteps: bool = True) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        self.unet = unet
        self.schedule = schedule
        self.prediction = prediction
        self.quantize_timesteps = quantize_timesteps

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C, h, w], ``sigma`` [B] -> denoised [B, C, h, w]."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        timestep = self.schedule.timestep(sigma.cpu(), quantize=self.quantize_timesteps).to(x.device)
        s = _view(sigma.to(x.device), x)
        c_in = 1 / (s * s + 1).sqrt()
        out = self.unet(x * c_in, timestep, **cond)
        if self.prediction == "eps":
            return x - out * s
        if self.prediction == "v":
            return x * c_in * c_in - out * s * c_in
        if self.prediction == "x0":
            return out
        scaled_t = _view(timestep.float(), x) * LCM_TIMESTEP_SCALING
        c_skip = LCM_SIGMA_DATA**2 / (scaled_t * scaled_t + LCM_SIGMA_DATA**2)
        c_out = scaled_t / (scaled_t * scaled_t + LCM_SIGMA_DATA**2).sqrt()
        return c_out * (x - out * s) + c_skip * x


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _fit_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat a conditioning tensor with batch 1 (or a divisor of ``batch``) to ``batch``."""
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0] == 0:
        return t.repeat(batch // t.shape[0], *([1] * (t.ndim - 1)))
    raise ValueError(f"conditioning batch {t.shape[0]} does not divide latent batch {batch}")


def concat_conds(conds: list[Mapping[str, torch.Tensor]], batch: int) -> dict[str, torch.Tensor]:
    """Concatenate several cond dicts along the batch, each fitted to ``batch`` items.

    ``context`` tensors with different token counts (e.g. 77 vs 154 for a long prompt) are
    tiled along tokens to their least common multiple, which leaves cross-attention unchanged.
    A value that is not a tensor is joined by its type's ``join(values, batch)`` classmethod.
    """
    keys = set(conds[0])
    if any(set(c) != keys for c in conds):
        raise ValueError("cond and uncond must carry the same keys")
    out: dict[str, torch.Tensor] = {}
    for key in conds[0]:
        if not isinstance(conds[0][key], torch.Tensor):  # e.g. ControlNet rows: their own type joins them
            out[key] = type(conds[0][key]).join([c[key] for c in conds], batch)
            continue
        parts = [_fit_batch(c[key], batch) for c in conds]
        if key == "context":
            tokens = 1
            for p in parts:
                tokens = _lcm(tokens, p.shape[1])
            parts = [p.repeat(1, tokens // p.shape[1], 1) for p in parts]
        out[key] = torch.cat(parts)
    return out


Conditioning = Mapping[str, torch.Tensor] | Sequence[CondRegion]


class CFGDenoiser:
    """Classifier-free guidance (Ho & Salimans 2022): D = D_u + cfg * (D_c - D_u).

    ``cond`` / ``uncond`` are either one mapping of UNet keyword tensors (one prompt over
    the whole latent) or a list of :class:`~nodes.sampling.regions.CondRegion` (several
    entries with areas, masks, strengths; see :mod:`nodes.sampling.regions`).
    With one plain entry on each side, unconditional and conditional predictions come from
    ONE batched call of ``denoiser`` (uncond first, then cond); region lists are batched by
    crop size, cond and uncond together.  With ``cfg == 1`` or no ``uncond`` only the
    conditional side is run.  ``denoiser(x, sigma, **cond) -> x0`` is e.g. a
    :class:`DiscreteDenoiser`.
    """

    def __init__(self, denoiser: Callable[..., torch.Tensor], cond: Conditioning,
                 uncond: Conditioning | None, cfg: float) -> None:
        self.denoiser = denoiser
        self.cfg = float(cfg)
        self.cond_regions: list[CondRegion] | None = None
        self.uncond_regions: list[CondRegion] | None = None
        if _single_plain(cond) and (uncond is None or _single_plain(uncond)):
            cond, uncond = _plain_mapping(cond), _plain_mapping(uncond) if uncond is not None else None
        if isinstance(cond, Mapping) and (uncond is None or isinstance(uncond, Mapping)):
            self.cond = dict(cond)
            self.uncond = dict(uncond) if uncond is not None else None
            return
        self.cond_regions = _as_regions(cond)
        self.uncond_regions = _as_regions(uncond) if uncond is not None else None
        if not self.cond_regions:
            raise ValueError("the positive conditioning is empty")
        if self.uncond_regions is not None and not self.uncond_regions:
            raise ValueError("the negative conditioning is empty")
        if self.uncond_regions is not None:
            add_area_twins(self.uncond_regions, self.cond_regions)
            add_area_twins(self.cond_regions, self.uncond_regions)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C, h, w], ``sigma`` [B] -> guided x0 estimate [B, C, h, w]."""
        return self._predict(x, sigma, want_uncond=False)[0]

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(guided, uncond)`` x0 estimates, for CFG++ samplers
        (:class:`~nodes.sampling.sampler_base.GuidedModel`).  The unconditional side is run
        even at cfg 1, as ComfyUI does for them; with no negative conditioning at all there
        is no guidance, and the conditional estimate stands for both."""
        return self._predict(x, sigma, want_uncond=True)

    def _predict(self, x: torch.Tensor, sigma: torch.Tensor, want_uncond: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cond_regions is not None:
            return self._regional(x, sigma, want_uncond)
        batch = x.shape[0]
        if self.uncond is None or (self.cfg == 1.0 and not want_uncond):
            cond_out = self.denoiser(x, sigma, **concat_conds([self.cond], batch))
            return cond_out, cond_out
        conds = concat_conds([self.uncond, self.cond], batch)
        out = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), **conds)
        uncond_out, cond_out = out.chunk(2)
        return uncond_out + (cond_out - uncond_out) * self.cfg, uncond_out

    def _regional(self, x: torch.Tensor, sigma: torch.Tensor,
                  want_uncond: bool) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.cond_regions is not None
        if self.uncond_regions is None or (self.cfg == 1.0 and not want_uncond):
            (cond_out,) = predict_regions(self.denoiser, x, sigma, [self.cond_regions], concat_conds)
            return cond_out, cond_out
        uncond_out, cond_out = predict_regions(self.denoiser, x, sigma, [self.uncond_regions, self.cond_regions],
                                               concat_conds)
        return uncond_out + (cond_out - uncond_out) * self.cfg, uncond_out


def _single_plain(conditioning: Conditioning) -> bool:
    if isinstance(conditioning, Mapping):
        return True
    return len(conditioning) == 1 and conditioning[0].is_plain


def _plain_mapping(conditioning: Conditioning) -> Mapping[str, torch.Tensor]:
    return conditioning if isinstance(conditioning, Mapping) else conditioning[0].cond


def _as_regions(conditioning: Conditioning) -> list[CondRegion]:
    if isinstance(conditioning, Mapping):
        raise TypeError("give cond and uncond both as mappings or both as CondRegion lists")
    return list(conditioning)
