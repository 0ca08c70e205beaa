"""Model nodes that change how a MODEL is sampled, not its weights.

ModelSamplingDiscrete is ComfyUI's way to say what a checkpoint predicts when detection
cannot tell: an SD2.x 512 eps checkpoint without metadata is taken as v-prediction
(``nodes.models.detect``'s default rule), and this node sets it back to ``eps``. It also
switches a model with an LCM-LoRA to the LCM schedule, and rescales to zero terminal SNR
for models trained that way. The choices and the prediction each means are declared here,
once, so that listing nodes does not import torch; ``nodes.sd.prediction_override`` reads them.
"""

from __future__ import annotations

from typing import Any

from graph import Input, Node, Output

# ComfyUI's choice -> our prediction (``nodes.sd.prediction_override``; "lcm" also means the distilled schedule).
SAMPLING_PREDICTIONS = {"eps": "eps", "v_prediction": "v", "lcm": "lcm", "x0": "x0"}
SAMPLING_CHOICES = tuple(SAMPLING_PREDICTIONS)


class ModelSamplingDiscrete(Node):
    """Samples the model as an eps, v-prediction, LCM or x0 model, optionally on a
    zero-terminal-SNR schedule. The input model is left as it was; the output shares its
    weights and LoRAs."""

    category = "advanced/model"
    model = Input("MODEL")
    sampling = Input(choices=list(SAMPLING_CHOICES),
                     tooltip="what the UNet predicts: noise (eps), velocity (v_prediction), "
                             "an LCM's consistency output (lcm, 50-step distilled schedule) or the clean latent (x0)")
    zsnr = Input("BOOLEAN", default=False,
                 tooltip="rescale the noise schedule to zero terminal SNR (for models trained with it)")
    outputs = (Output("MODEL"),)

    def execute(self, model: Any, sampling: str, zsnr: bool) -> tuple:
        from nodes.sd.prediction_override import with_model_sampling

        return (with_model_sampling(model, sampling, bool(zsnr)),)
