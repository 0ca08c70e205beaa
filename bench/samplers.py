"""Cost per step of every sampler on the house model, against euler in the same run (issue 14).

Each sampler runs the txt2img workflow of ``tools/eval_house_model.py`` (128x128, cfg 5,
scheduler ``normal``) through the engine at two step counts; the loader and text
encoders are cached, so a run re-executes KSampler, VAEDecode and SaveImage.  The cost of
one step is the difference of the two run times over the difference of the step counts,
which removes the fixed cost of decoding and saving.  Each run time is the fastest of the
repeats: load from other processes only ever adds time, so the minimum is the least
disturbed reading (medians are printed too).  Samplers are interleaved
within each repeat so that drift of the machine's load falls on all of them alike.
"Calls" is the number of model evaluations (each a CFG batch of 2) per schedule step,
counted on an analytic model over the same sigmas; "own" is the sampler's own arithmetic
per step (its run on that nearly free model, noise drawing included).  dpm_adaptive picks its own steps, so
its per-step figure is meaningless; its whole run (at the higher step count) is given
against euler's run instead.  Torch runs on one thread by default: on a shared 2-core box
two threads per process make every run several times slower and much noisier, and the
ratios, not the absolute times, are what this measures.

    PYTHONPATH=. python bench/samplers.py [--steps 10,30] [--repeat 3] [--threads 1] [--samplers a,b,...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nodes.sampling import SAMPLER_NAMES, calculate_sigmas, get_sampler, sd_schedule  # noqa: E402
from nodes.sampling.noise import make_noise_sampler  # noqa: E402
from tools.eval_house_model import DEFAULT_CHECKPOINT, HouseRunner, txt2img_document  # noqa: E402

CAPTION = "a small red circle on a blue background, top left"
SCHEDULER = "normal"


def analytic_run(sampler: str, steps: int) -> tuple[float, float]:
    """(model evaluations per schedule step, seconds per step) of ``sampler`` on a Gaussian
    denoiser that costs next to nothing: the call count, and the sampler's own arithmetic
    on a house-model-sized latent (fastest of 5 runs)."""
    calls = [0]

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        s = sigma.reshape(-1, 1, 1, 1)
        return x / (1 + s * s)

    schedule = sd_schedule()
    spec = get_sampler(sampler)
    sigmas = calculate_sigmas(schedule, SCHEDULER, sampler, steps)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])
    seconds = []
    for _ in range(5):
        calls[0] = 0
        start = time.perf_counter()
        spec.fn(model, x, sigmas, noise_sampler=make_noise_sampler(spec.noise, x, 0, sigmas), **spec.options(schedule))
        seconds.append(time.perf_counter() - start)
    return calls[0] / (len(sigmas) - 1), min(seconds) / (len(sigmas) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="10,30", help="the two step counts (low,high)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samplers", default=",".join(SAMPLER_NAMES))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    low, high = (int(v) for v in args.steps.split(","))
    samplers = [s for s in args.samplers.split(",") if s]
    if "euler" not in samplers:
        samplers.insert(0, "euler")
    times: dict[tuple[str, int], list[float]] = {(s, n): [] for s in samplers for n in (low, high)}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        runner = HouseRunner(DEFAULT_CHECKPOINT, Path(tmp))
        runner.generate(CAPTION, seed=0, steps=2)  # load the checkpoint, encode the prompts
        seed = 1
        for _ in range(args.repeat):
            for sampler in samplers:
                for steps in (low, high):
                    seed += 1  # a new seed, so KSampler is not served from the cache
                    doc = txt2img_document(runner.ckpt_name, CAPTION, seed, steps, 5.0, sampler, SCHEDULER)
                    start = time.perf_counter()
                    runner.run(doc, "7")
                    times[(sampler, steps)].append(time.perf_counter() - start)
    fastest = {key: min(v) for key, v in times.items()}
    median = {key: statistics.median(v) for key, v in times.items()}

    def per_step(table: dict[tuple[str, int], float], s: str) -> float:
        return (table[(s, high)] - table[(s, low)]) / (high - low)

    print(f"house model, 128x128, cfg 5, {SCHEDULER}, steps {low} and {high}, {args.repeat} repeats; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'sampler':32s} {'calls/step':>10s} {'own ms':>7s} {'ms/step':>8s} {'x euler':>8s} {'(median)':>9s}")
    for s in samplers:
        calls, own = analytic_run(s, high)
        head = f"{s:32s} {calls:10.2f} {own * 1000:7.2f}"
        if s == "dpm_adaptive":
            run_ratio = fastest[(s, high)] / fastest[("euler", high)]
            print(f"{head} {'-':>8s} {'-':>8s} {'-':>9s}   whole {high}-step run {run_ratio:.2f}x euler's")
            continue
        step = per_step(fastest, s)
        print(f"{head} {step * 1000:8.1f} {step / per_step(fastest, 'euler'):8.2f} "
              f"{per_step(median, s) / per_step(median, 'euler'):9.2f}")


if __name__ == "__main__":
    main()
