"""Write the forward-process view's example images: a few held-out Fashion-MNIST images and a few
emoji, as 32x32 PNGs in assets/examples/ with a manifest (assets/examples/index.json).

    python make_examples.py

Images go through the same loaders as training (`data.py`: Fashion-MNIST padded to 32x32 on
black, emoji composited on white and Lanczos-downsampled), so the forward view adds noise to
exactly what the models learned from. Deterministic: fixed indices and emoji code points.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

import data

OUT = Path(__file__).resolve().parent.parent / "assets" / "examples"
# (name, class label) from the held-out test set: the first image of each class.
FASHION = [("tshirt", 0), ("dress", 3), ("sneaker", 7), ("bag", 8)]
EMOJI = [("grinning", "1f600"), ("apple", "1f34e"), ("rocket", "1f680"), ("rainbow", "1f308")]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    entries = []
    fashion = data.load_fashion("heldout")
    for name, label in FASHION:
        i = int((fashion.labels == label).nonzero()[0, 0])
        img = fashion.images[i, 0].numpy()
        file = f"fashion-{name}.png"
        Image.fromarray(img, "L").save(OUT / file, optimize=True)
        entries.append({"file": file, "title": f"Fashion-MNIST: {data.FASHION_CLASSES[label]}", "channels": 1})
    for name, code in EMOJI:
        src = data.EMOJI_DIR / "emoji-datasource-google" / "img" / "google" / "64" / f"{code}.png"
        img = data._load_emoji_png(src, 32)
        file = f"emoji-{name}.png"
        Image.fromarray(np.ascontiguousarray(img), "RGB").save(OUT / file, optimize=True)
        entries.append({"file": file, "title": f"Emoji: {name}", "channels": 3})
    (OUT / "index.json").write_text(json.dumps({"examples": entries}, indent=2) + "\n")
    total = sum((OUT / e["file"]).stat().st_size for e in entries)
    print(f"wrote {len(entries)} examples to {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
