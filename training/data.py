"""Dataset loaders: Fashion-MNIST (Debian `dataset-fashion-mnist`) and emoji (npm
`emoji-datasource-google` / `-twitter`), as uint8 tensors held in memory.

Both return `Split(images, labels)` with images uint8 `[N, C, 32, 32]` (`emoji64`: the same
emoji and split at 64x64); `to_model_range`
maps them to the model's [-1, 1]. Everything fits in RAM (60k x 1 x 32 x 32 = 61 MB),
so training indexes tensors directly instead of using loader workers: the machine has
two cores and the compiler needs them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
FASHION_DIR = Path(os.environ.get("STEPWISE_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
EMOJI_DIR = Path(os.environ.get("STEPWISE_EMOJI_DIR", HERE / "data" / "node_modules"))
CACHE_DIR = Path(os.environ.get("STEPWISE_CACHE_DIR", HERE / "data" / "cache"))

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# Label used for "no class" in classifier-free guidance (num_class_embeds = 11).
NULL_CLASS = 10
EMOJI_SETS = ("google", "twitter")
# The emoji.json `category` values, sorted: the emoji labels (and the class labels of the
# category-conditional emoji models, issue 36, with NULL_CLASS = 10 as "any category").
EMOJI_CATEGORIES = [
    "Activities", "Animals & Nature", "Component", "Flags", "Food & Drink",
    "Objects", "People & Body", "Smileys & Emotion", "Symbols", "Travel & Places",
]
EMOJI_HELDOUT_FRACTION = 0.1


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, C, H, W], H = W = 32 (64 for emoji64)
    labels: torch.Tensor  # int64 [N]
    class_names: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, n: int) -> "Split":
        return Split(self.images[:n], self.labels[:n], self.class_names)


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def sr_lowres(x64: torch.Tensor) -> torch.Tensor:
    """The super-resolution model's low-resolution input: [-1, 1] [N, 3, 64, 64] -> [N, 3, 32, 32]
    by 2x2 box averaging (`F.interpolate(mode="area")`)."""
    return torch.nn.functional.interpolate(x64, size=32, mode="area")


def box_consistency(x64: torch.Tensor, lowres32: torch.Tensor) -> torch.Tensor:
    """Make x64 average down (2x2 boxes, `sr_lowres`) to lowres32: add to each block the
    difference between its low-resolution pixel and its mean (the projection onto the images
    consistent with the input; DDNM, Wang et al. 2023). The Rust engine's
    `edit::box_consistency` is the same."""
    f = x64.shape[-1] // lowres32.shape[-1]
    return x64 + torch.nn.functional.interpolate(lowres32 - torch.nn.functional.avg_pool2d(x64, f),
                                                 scale_factor=f, mode="nearest")


def sr_condition(lowres32: torch.Tensor) -> torch.Tensor:
    """What `emoji-sr` concatenates to x_t (channels 3..5) at every step: the 32x32 image in
    [-1, 1], bicubic-upsampled 2x with `align_corners=False` (not clamped). The Rust engine
    computes exactly this."""
    return torch.nn.functional.interpolate(lowres32, scale_factor=2, mode="bicubic", align_corners=False)


# ---------------------------------------------------------------- Fashion-MNIST

def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(split: str) -> Split:
    """`split` is "train" (60k) or "heldout" (the official 10k test set).

    28x28 images are zero-padded (black border, the dataset's background) to 32x32 so the
    UNet can downsample three times.
    """
    prefix = {"train": "train", "heldout": "t10k"}[split]
    imgs = _read_idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(imgs.copy()).unsqueeze(1)
    x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=0)
    return Split(x, torch.from_numpy(labels.astype(np.int64)), FASHION_CLASSES)


# ---------------------------------------------------------------- emoji

def _emoji_entries() -> list[tuple[str, str]]:
    """(image file name, category) for every emoji and skin-tone variant."""
    meta = json.loads((EMOJI_DIR / "emoji-datasource-google" / "emoji.json").read_text())
    out = []
    for e in meta:
        out.append((e["image"], e["category"], e["unified"]))
        for v in (e.get("skin_variations") or {}).values():
            # Variants share the base emoji's split key so a held-out emoji is unseen
            # in every skin tone.
            out.append((v["image"], e["category"], e["unified"]))
    return out


def _is_heldout(key: str) -> bool:
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return h < EMOJI_HELDOUT_FRACTION * 2**32


def _load_emoji_png(path: Path, size: int) -> np.ndarray:
    im = Image.open(path).convert("RGBA")
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    im = Image.alpha_composite(bg, im).convert("RGB")
    im = im.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(im)


def load_emoji(split: str, size: int = 32) -> Split:
    """`split` is "train" or "heldout" (~10%, chosen by a hash of the base emoji's code).

    Both the Google (Noto) and Twitter (Twemoji) sets, 64x64 RGBA composited on white and
    downsampled with Lanczos. Labels are the emoji.json category indices (EMOJI_CATEGORIES: the
    evaluation classifiers' classes and, for the issue-36 `emoji-<size>` configs, the class
    labels). Cached as .npz after the first decode.
    """
    assert split in ("train", "heldout")
    cache = CACHE_DIR / f"emoji_{split}_{size}.npz"
    if cache.exists():
        z = np.load(cache)
        return Split(torch.from_numpy(z["x"]), torch.from_numpy(z["y"]), list(EMOJI_CATEGORIES))
    categories = sorted({c for _, c, _ in _emoji_entries()})
    assert categories == EMOJI_CATEGORIES, categories
    xs, ys = [], []
    for name, cat, key in _emoji_entries():
        if _is_heldout(key) != (split == "heldout"):
            continue
        for s in EMOJI_SETS:
            p = EMOJI_DIR / f"emoji-datasource-{s}" / "img" / s / "64" / name
            if p.exists():
                xs.append(_load_emoji_png(p, size))
                ys.append(categories.index(cat))
    x = np.stack(xs).transpose(0, 3, 1, 2).copy()
    y = np.array(ys, dtype=np.int64)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x, y=y)
    return Split(torch.from_numpy(x), torch.from_numpy(y), categories)


def load(dataset: str, split: str) -> Split:
    """`dataset`: "fashion" (1x32x32), "emoji" (3x32x32) or "emoji64" (3x64x64: the same emoji and
    the same held-out split at the source PNGs' native 64x64, for the VAE and super-resolution)."""
    if dataset == "fashion":
        return load_fashion(split)
    if dataset == "emoji":
        return load_emoji(split)
    if dataset == "emoji64":
        return load_emoji(split, size=64)
    raise ValueError(f"unknown dataset {dataset!r} (expected 'fashion', 'emoji' or 'emoji64')")


if __name__ == "__main__":
    for ds in ("fashion", "emoji", "emoji64"):
        for sp in ("train", "heldout"):
            s = load(ds, sp)
            print(ds, sp, tuple(s.images.shape), s.images.dtype, "classes:", len(s.class_names),
                  "counts:", torch.bincount(s.labels).tolist())
