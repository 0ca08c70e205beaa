"""SDE noise (issue 20): torchsde's Brownian tree against our old hand-written Brownian noise.

Cost per sampling step on the house model (``models/checkpoints/latentgraph-house-v1``,
128x128, cfg 5, the txt2img workflow through the engine, as ``tools/eval_house_model.py``
runs it), for an SDE sampler with each noise source:

  tree  ``nodes.sampling.noise.BrownianTreeNoise`` (torchsde, ComfyUI's noise; what runs now)
  old   the seeded Brownian-bridge noise the SDE samplers used before issue 20, kept below
        (``OldBrownianNoise``) only for this comparison

Per step = (time at ``--long`` steps - time at ``--short`` steps) / (long - short), so the
fixed cost of a run (decode, save, engine) cancels; runs alternate between the two sources
and the median of ``--repeat`` is taken, in wall time and in this process's CPU time (less
disturbed by other work on the machine).  The time spent inside the noise sampler's calls
is measured too (per step), and one noise call alone at three latent sizes.

    PYTHONPATH=. python bench/sde_noise.py [--samplers dpmpp_2m_sde,dpmpp_sde] [--repeat 5] [--threads N]
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nodes.sampling.run as run_module  # noqa: E402
from nodes.sampling import calculate_sigmas, make_noise_sampler, sd_schedule  # noqa: E402
from tools.eval_house_model import DEFAULT_CHECKPOINT, HouseRunner  # noqa: E402

CAPTION = "a small red circle on a blue background, top left"


class OldBrownianNoise:
    """The SDE noise before issue 20 (``nodes/sampling/noise.py`` at commit 750cc92): one
    Brownian motion W(sigma) sampled exactly and lazily from a seeded CPU generator, new
    points by Brownian-bridge sampling, points above the current interval forgotten.
    ``like`` [B, C, h, w]; calls return (W(b) - W(a)) / sqrt(|b - a|) like it."""

    def __init__(self, like: torch.Tensor, seed: int) -> None:
        self.shape, self.dtype, self.device = tuple(like.shape), like.dtype, like.device
        self.generator = torch.Generator("cpu").manual_seed(int(seed))
        self._times: list[float] = []
        self._values: list[torch.Tensor] = []

    def _randn(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, dtype=torch.float64)

    def _value(self, s: float) -> torch.Tensor:
        times, values = self._times, self._values
        if not times:
            times.append(s)
            values.append(torch.zeros(self.shape, dtype=torch.float64))
            return values[0]
        k = bisect.bisect_left(times, s)
        if k < len(times) and times[k] == s:
            return values[k]
        if k == 0:
            w = values[0] + math.sqrt(times[0] - s) * self._randn()
        elif k == len(times):
            w = values[-1] + math.sqrt(s - times[-1]) * self._randn()
        else:
            lo, hi = times[k - 1], times[k]
            mean = values[k - 1] + (s - lo) / (hi - lo) * (values[k] - values[k - 1])
            w = mean + math.sqrt((s - lo) * (hi - s) / (hi - lo)) * self._randn()
        times.insert(k, s)
        values.insert(k, w)
        return w

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        a, b = float(sigma), float(sigma_next)
        if a == b:
            return torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        keep = bisect.bisect_right(self._times, max(a, b))
        if keep < len(self._times) - 1:  # forget points above this interval but one anchor
            del self._times[keep + 1 :], self._values[keep + 1 :]
        increment = (self._value(b) - self._value(a)) / math.sqrt(abs(b - a))
        return increment.to(device=self.device, dtype=self.dtype)


class NoiseTimer:
    """Installs a noise source into ``run_sampler`` and adds up the time spent in its calls."""

    def __init__(self) -> None:
        self.kind = "tree"
        self.seconds = 0.0
        self.calls = 0
        self._make = run_module.make_noise_sampler

    def make(self, kind: str | None, like: torch.Tensor, seed: int, sigmas: torch.Tensor) -> Any:
        inner = OldBrownianNoise(like, seed) if self.kind == "old" and kind == "brownian" else \
            self._make(kind, like, seed, sigmas)
        if inner is None:
            return None

        def timed(sigma: float, sigma_next: float) -> torch.Tensor:
            start = time.perf_counter()
            out = inner(sigma, sigma_next)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            return out

        return timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samplers", default="dpmpp_2m_sde,dpmpp_sde")
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--long", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, load average at start {os.getloadavg()[0]:.1f}")
    timer = NoiseTimer()
    run_module.make_noise_sampler = timer.make
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        runner = HouseRunner(DEFAULT_CHECKPOINT, Path(tmp))
        runner.generate(CAPTION, 0, steps=2)  # loads the checkpoint once
        for sampler in args.samplers.split(","):
            wall: dict[tuple[str, int], list[float]] = {}
            cpu: dict[tuple[str, int], list[float]] = {}
            noise: dict[str, list[float]] = {"tree": [], "old": []}
            seed = 1
            for _ in range(args.repeat):
                for kind in ("tree", "old"):
                    timer.kind = kind
                    for steps in (args.short, args.long):
                        timer.seconds, timer.calls = 0.0, 0
                        start, start_cpu = time.perf_counter(), time.process_time()
                        runner.generate(CAPTION, seed, steps=steps, sampler=sampler, scheduler="karras")
                        wall.setdefault((kind, steps), []).append(time.perf_counter() - start)
                        cpu.setdefault((kind, steps), []).append(time.process_time() - start_cpu)
                        noise[kind].append(timer.seconds / steps)
                        seed += 1
            span = args.long - args.short
            for label, table in (("wall", wall), ("cpu", cpu)):
                per_step = {kind: (statistics.median(table[(kind, args.long)])
                                   - statistics.median(table[(kind, args.short)])) / span for kind in ("tree", "old")}
                print(f"{sampler} {label}: per step {per_step['tree'] * 1e3:.2f} ms (tree) vs "
                      f"{per_step['old'] * 1e3:.2f} ms (old), ratio {per_step['tree'] / per_step['old']:.3f}")
            print(f"{sampler} inside the noise sampler (wall, median): {statistics.median(noise['tree']) * 1e3:.2f} ms "
                  f"(tree) vs {statistics.median(noise['old']) * 1e3:.2f} ms (old) per step")
    print("one noise call alone, dpmpp_2m_sde's 20 karras steps (wall, median of 5 runs):")
    for h, w in ((16, 16), (64, 64), (128, 128)):
        like = torch.zeros(1, 4, h, w)
        sigmas = calculate_sigmas(sd_schedule(), "karras", "dpmpp_2m_sde", 20)
        row = []
        for kind in ("tree", "old"):
            runs = []
            for _ in range(5):
                ns = make_noise_sampler("brownian", like, 3, sigmas) if kind == "tree" else OldBrownianNoise(like, 3)
                start = time.perf_counter()
                for i in range(len(sigmas) - 2):
                    ns(float(sigmas[i]), float(sigmas[i + 1]))
                runs.append((time.perf_counter() - start) / (len(sigmas) - 2))
            row.append(statistics.median(runs))
        print(f"  latent 4x{h}x{w}: {row[0] * 1e3:.2f} ms (tree) vs {row[1] * 1e3:.2f} ms (old)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
