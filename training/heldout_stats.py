"""The held-out side of the classifier-space FID, for `diffuse eval` (src/lab/eval.rs).

    python training/heldout_stats.py            # both datasets, ~1 min

Writes, beside each classifier (training/classifier/<dataset>.safetensors):
- <dataset>.heldout.safetensors: `mean` [128] and `cov` [128, 128] (f64) of the classifier's
  features over the whole held-out split, and `count`;
- <dataset>.heldout.json: the FID floor for n samples (n real *training* images against the
  held-out set, the same draw as sampler_table.py's `reference`), for the n a run may use.
FID is biased upwards at small n, so a sample's FID means something only beside the floor at its n.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import load, to_model_range  # noqa: E402
from evaluate import CLS_DIR, batched, fid, get_classifier  # noqa: E402

FLOOR_N = (50, 100, 200, 500, 1000, 2000)


def main() -> None:
    for dataset in ("fashion", "emoji"):
        clf, meta = get_classifier(dataset)
        tr, ho = load(dataset, "train"), load(dataset, "heldout")
        f_ho = batched(clf.features, to_model_range(ho.images)).double()
        save_file({"mean": f_ho.mean(0).contiguous(), "cov": torch.cov(f_ho.T).contiguous(),
                   "count": torch.tensor([len(f_ho)], dtype=torch.int64)},
                  CLS_DIR / f"{dataset}.heldout.safetensors")
        floors = {}
        for n in FLOOR_N:
            g = torch.Generator().manual_seed(0)
            real = to_model_range(tr.images[torch.randperm(len(tr), generator=g)[:n]])
            floors[str(n)] = round(fid(batched(clf.features, real), f_ho), 4)
        (CLS_DIR / f"{dataset}.heldout.json").write_text(json.dumps({
            "dataset": dataset, "heldout_count": len(f_ho), "image_shape": list(ho.images.shape[1:]),
            "classes": meta["classes"], "floor_fid": floors,
            "note": "floor_fid[n]: FID of n real training images (seed 0 permutation) against the held-out "
                    "features; compare a sample of n against it"}, indent=1) + "\n")
        print(dataset, "held-out", len(f_ho), "floors", floors, flush=True)


if __name__ == "__main__":
    main()
