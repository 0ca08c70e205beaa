"""Image upscale models through spandrel (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, ... every
architecture spandrel detects), and tiled inference so large images fit in memory.

- ``load``: read a model file safely and let spandrel detect its architecture; the
  ``UPSCALE_MODEL`` handle.
- ``tiled``: run a model over overlapping tiles with feathered blending, per-tile progress,
  and smaller tiles on out-of-memory.
"""
