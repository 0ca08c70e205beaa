"""Glue between the node classes and the model/sampling libraries: the MODEL, CLIP and VAE
handles nodes pass around, prompt encoding, the UNet call adapter, and the runtime device."""
