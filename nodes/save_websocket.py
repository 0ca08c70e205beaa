"""SaveImageWebsocket: ComfyUI's example output node that streams images over the websocket.

Many API clients are built around it: instead of saving files and fetching them with
``/view``, they read each image as a binary websocket frame while this node runs. As in
ComfyUI, every image of the batch goes as a full-size PNG to the prompt's client
(frame type 1, format 2; or type 4 with metadata to clients that announced
``supports_preview_metadata``), whatever ``--preview-method`` says, with a progress step
per image; nothing is written to disk and no metadata is put in the images.
"""

from __future__ import annotations

from typing import Any

from graph import Input, Node, NodeResult

# The event the server's worker turns into a PNG frame (latentgraph_server/worker.py).
IMAGE_EVENT = "websocket_image"


class SaveImageWebsocket(Node):
    """Sends images to the client as PNG websocket frames instead of saving them."""

    category = "api node/image"
    output_node = True
    # Like ComfyUI's IS_CHANGED returning the time: a client that re-submits wants the frames again.
    not_deterministic = True
    images = Input("IMAGE")
    outputs = ()

    def execute(self, images: Any) -> NodeResult:
        import numpy as np
        from PIL import Image

        total = int(images.shape[0])
        for index in range(total):
            pixels = (images[index].float().cpu().numpy() * 255.0).clip(0, 255).astype(np.uint8)
            self.context.emit(IMAGE_EVENT, {"image": Image.fromarray(pixels), "node": self.context.node_id,
                                            "prompt_id": self.context.prompt_id})
            self.context.progress(index + 1, total)
        return NodeResult(ui=None)
