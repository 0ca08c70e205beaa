"""A MODEL handle that predicts another way, or on another noise schedule, than it loaded.

Behind the ModelSamplingDiscrete node. ComfyUI's choices map to our predictions and
schedules as:

- ``eps`` / ``v_prediction`` / ``x0``: the UNet's output is noise / velocity / the clean
  latent, on the checkpoint's own schedule;
- ``lcm``: a latent consistency model (or LCM-LoRA) on the 50-step distilled schedule
  (:class:`~nodes.sampling.DistilledSchedule`);
- ``zsnr``: the schedule rescaled to zero terminal SNR first
  (:meth:`~nodes.sampling.DiscreteSchedule.with_zero_terminal_snr`).

The schedule is always rebuilt from the one the checkpoint was loaded with, so chaining
two such nodes gives what the last one says (as in ComfyUI), and the input handle is left
as it was.
"""

from __future__ import annotations

from dataclasses import replace

from nodes.model_sampling import SAMPLING_PREDICTIONS
from nodes.sampling import DistilledSchedule
from nodes.sd.handles import ModelHandle


def with_model_sampling(model: ModelHandle, sampling: str, zsnr: bool) -> ModelHandle:
    """A new handle sharing ``model``'s UNet (and LoRAs) that samples as ``sampling`` says
    (a key of ``SAMPLING_PREDICTIONS``), on a zero-terminal-SNR schedule when ``zsnr``.

    The new handle's ``base_unet`` is the input's original UNet, so it reports no bytes of
    its own to the output cache beyond any LoRA the input carried.
    """
    if sampling not in SAMPLING_PREDICTIONS:
        raise ValueError(f"unknown sampling {sampling!r}; expected one of {', '.join(SAMPLING_PREDICTIONS)}")
    base = model.original_schedule
    schedule = base.with_zero_terminal_snr() if zsnr else base
    if sampling == "lcm":
        schedule = DistilledSchedule(schedule)
    return replace(model, prediction=SAMPLING_PREDICTIONS[sampling], schedule=schedule, base_schedule=base,
                   base_unet=model.original_unet)
