"""Regenerate the bundled CLIP tokenizer files from open-clip-torch's BPE list.

Writes ``nodes/models/tokenizer/vocab.json`` (49408 entries) and ``merges.txt`` (a
``#version`` header then 48894 merge lines), the files transformers' ``CLIPTokenizer``
reads. The source is ``open_clip/bpe_simple_vocab_16e6.txt.gz``, found in an
``open-clip-torch`` wheel (``--wheel``), a loose ``.gz`` file (``--bpe``) or an installed
``open_clip`` package (the default). The runtime never needs open-clip-torch.

Usage::

    pip download open-clip-torch --no-deps -d /tmp/ocw
    python tools/make_clip_tokenizer.py --wheel /tmp/ocw/open_clip_torch-*.whl
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
MERGE_COUNT = 49152 - 256 - 2  # 48894: the merge lines CLIP actually uses
OUT_DIR = Path(__file__).resolve().parent.parent / "nodes" / "models" / "tokenizer"


def bytes_to_unicode() -> list[str]:
    """The 256 printable unicode symbols GPT-2/CLIP byte-level BPE uses, in byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def read_bpe_text(wheel: Path | None, bpe: Path | None) -> str:
    """Return the decompressed BPE list text from a wheel, a .gz file, or installed open_clip."""
    if bpe is not None:
        return gzip.decompress(bpe.read_bytes()).decode("utf-8")
    if wheel is not None:
        with zipfile.ZipFile(wheel) as zf:
            return gzip.decompress(zf.read(BPE_MEMBER)).decode("utf-8")
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise SystemExit("open_clip is not installed: pass --wheel or --bpe")
    path = Path(spec.origin).parent / Path(BPE_MEMBER).name
    return gzip.decompress(path.read_bytes()).decode("utf-8")


def build_vocab_and_merges(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    """Build CLIP's token->id map and the merge lines from the raw BPE list text."""
    merge_lines = bpe_text.split("\n")[1 : MERGE_COUNT + 1]
    if len(merge_lines) != MERGE_COUNT:
        raise SystemExit(f"expected {MERGE_COUNT} merge lines, found {len(merge_lines)}")
    symbols = bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(line.split()) for line in merge_lines]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise SystemExit(f"expected {VOCAB_SIZE} unique tokens, built {len(vocab)}")
    return vocab, merge_lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="an open_clip_torch-*.whl file")
    parser.add_argument("--bpe", type=Path, help="a bpe_simple_vocab_16e6.txt.gz file")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    args = parser.parse_args(argv)
    vocab, merges = build_vocab_and_merges(read_bpe_text(args.wheel, args.bpe))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (args.out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
