"""Move the training data to a lent GPU machine, which can reach nothing outside itself and
takes at most 64 MiB of files per call (README.md, "Training on a lent GPU").

    python gpu_data.py pack   DEST   # here: Fashion-MNIST train + emoji 64x64, xz-compressed
    python gpu_data.py unpack SRC DEST  # there: the files data.py reads, under DEST/{fashion,cache}

The emoji 32x32 sets are not sent: `unpack` derives them from the 64x64 arrays with the same
Lanczos resize `data.load_emoji` applies to the source PNGs (pack checks they are identical).
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import data


def _xz_array(x: np.ndarray, path: Path):
    path.write_bytes(lzma.compress(np.ascontiguousarray(x).tobytes(), preset=6))


def _unxz_array(path: Path, shape, dtype=np.uint8) -> np.ndarray:
    return np.frombuffer(lzma.decompress(path.read_bytes()), dtype=dtype).reshape(shape)


def down32(x64_nchw: np.ndarray) -> np.ndarray:
    out = np.empty((x64_nchw.shape[0], 3, 32, 32), np.uint8)
    for i, im in enumerate(x64_nchw.transpose(0, 2, 3, 1)):
        out[i] = np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    return out


def pack(dest: Path):
    (dest / "fashion").mkdir(parents=True, exist_ok=True)
    (dest / "emoji").mkdir(parents=True, exist_ok=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        raw = gzip.decompress((data.FASHION_DIR / f"{name}.gz").read_bytes())
        (dest / "fashion" / f"{name}.xz").write_bytes(lzma.compress(raw, preset=9))
    for split in ("train", "heldout"):
        s64 = data.load(split=split, dataset="emoji64")
        s32 = data.load(split=split, dataset="emoji")
        if not np.array_equal(down32(s64.images.numpy()), s32.images.numpy()):
            raise SystemExit(f"emoji {split}: 32x32 derived from 64x64 differs from data.load('emoji')")
        x = s64.images.numpy().transpose(0, 2, 3, 1)  # NHWC compresses better
        _xz_array(x, dest / "emoji" / f"{split}_64_{x.shape[0]}.xz")
        np.save(dest / "emoji" / f"{split}_labels.npy", s64.labels.numpy())
    for p in sorted(dest.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size / 1e6:8.2f} MB  {p}")


def unpack(src: Path, dest: Path):
    if (src / "fashion").exists():
        (dest / "fashion").mkdir(parents=True, exist_ok=True)
        for p in (src / "fashion").glob("*.xz"):
            if (dest / "fashion" / f"{p.stem}.gz").exists():
                continue  # a second call of the same device run: lanes may be reading it
            raw = lzma.decompress(p.read_bytes())
            (dest / "fashion" / f"{p.stem}.gz").write_bytes(gzip.compress(raw, compresslevel=1))
    if (src / "emoji").exists():
        (dest / "cache").mkdir(parents=True, exist_ok=True)
        for p in (src / "emoji").glob("*_64_*.xz"):
            split, _, n = p.stem.split("_")
            if (dest / "cache" / f"emoji_{split}_32.npz").exists():
                continue
            x64 = _unxz_array(p, (int(n), 64, 64, 3)).transpose(0, 3, 1, 2).copy()
            y = np.load(src / "emoji" / f"{split}_labels.npy")
            np.savez(dest / "cache" / f"emoji_{split}_64.npz", x=x64, y=y)
            np.savez(dest / "cache" / f"emoji_{split}_32.tmp.npz", x=down32(x64), y=y)
            os.replace(dest / "cache" / f"emoji_{split}_32.tmp.npz", dest / "cache" / f"emoji_{split}_32.npz")
    shutil.os.sync()
    print("unpacked", sorted(str(p) for p in dest.rglob("*") if p.is_file()))


if __name__ == "__main__":
    if sys.argv[1] == "pack":
        pack(Path(sys.argv[2]))
    elif sys.argv[1] == "unpack":
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
