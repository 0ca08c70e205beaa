"""Offline model loading for Stable Diffusion checkpoints (no node classes here).

Public API (import the submodules lazily, inside a node's ``execute``)::

    from nodes.models.loader import load_checkpoint, load_vae
    ckpt = load_checkpoint(path, device="cpu", dtype=torch.float32, part_dtypes=None,
                           keep_file_precision=("unet", "vae", "text"), prediction_type=None)
    vae = load_vae(path, device="cpu", dtype=torch.float32)

    from nodes.models.detect import detect_file          # header only, no tensor data
    info = detect_file(path, prediction_type=None)        # -> CheckpointInfo

    from nodes.models.tokenizers import bundled_clip_tokenizer
    from nodes.models.ldm_writer import save_ldm_checkpoint   # diffusers models -> LDM file
    from nodes.models.errors import ModelLoadError, UnknownCheckpointError, UnsafeFormatError

``load_checkpoint`` returns a ``bundle.LoadedCheckpoint``. Modules, one job each:

- ``detect``: family / prediction type / in_channels from key names and shapes.
- ``family_config`` + ``configs/``: bundled diffusers/transformers configs per family, and
  the ``latentgraph.config`` metadata override (architecture stored in the file).
- ``keymap`` (generic gather/scatter) + ``keymap_unet`` / ``keymap_vae`` / ``keymap_clip``:
  LDM/OpenCLIP <-> diffusers/transformers key maps.
- ``state_source``: memory-mapped safetensors reader; pickles only via ``weights_only``.
- ``build``: meta-device model construction and in-place weight assignment.
- ``cast_weights``: weight matrices kept in the file's narrower dtype (fp16 on the CPU),
  cast layer by layer to the compute dtype as they run.
- ``loader`` (single files, VAE files), ``diffusers_folder`` (diffusers folders).
- ``tokenizers`` + ``tokenizer/``: CLIP BPE files (regenerate: ``tools/make_clip_tokenizer.py``).
- ``ldm_writer``: write models back in the LDM single-file layout (tests, checkpoint save).
"""
