"""Sample quality per sampler x steps x x̂0-clipping choice, measured on what the page computes.

    python sampler_table.py --model fashion --card          # the card's table (full_cells), ~1.5 h on 2 cores
    python sampler_table.py --model fashion --quick --check # the regression test (scripts/test.sh)
    python sampler_table.py --model fashion --grid          # samples.png at the page's defaults
    python sampler_table.py --model emoji --from-jsonl runs/table-emoji.jsonl --card   # from saved rows

Samples come from the Rust engine (`diffuse sample --device cpu`, the same code as the page's CPU
backend), not from PyTorch, so the table measures what a viewer sees. Each cell draws the same
initial noise (per class: seed + class), so cells differ only by the sampler and its settings.
Scored like evaluate.py: the committed classifier's accuracy on the requested class (fashion) and
FID in its 128-d feature space against the held-out set, beside the floor (FID of as many real
training images against the same held-out set, so the small-sample bias is the same).

The clipping choices (the DDIM-convergence issue):
- `clip`: `clip_sample: true`, diffusers' default: DDIM clips x̂0 to [-1, 1] but builds x_{t-1}
  from the clipped x̂0 and the model's unclipped ε;
- `clip+eps`: the same, with ε recomputed from the clipped x̂0 (`use_clipped_model_output`);
- `noclip`: `clip_sample: false`.
DDPM's posterior mean mixes x̂0 and x_t, so it has no such mismatch; DPM-Solver++ and Euler-a
ignore `clip_sample` (as in diffusers), so they are measured once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from configs import guidance_of
from data import load, to_model_range
from evaluate import DATASET_OF, batched, fid, get_classifier, lanczos32

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

STEPS = (10, 20, 50, 100)
CLIPS = ("clip", "clip+eps", "noclip")


def full_cells(name: str, shipped_clip: str) -> list[dict]:
    """The model card's table. Ordered so that a run cut short still answers the main question
    (DDIM eta 0 per clipping choice) first; DDPM at 1000 steps, the slowest cell, last. The
    unconditional emoji models get a shorter table (their deterministic samplers diverge, which
    few cells show)."""
    cell = lambda s, k, eta=0.0, clip=shipped_clip: dict(sampler=s, steps=k, eta=eta, clip=clip)  # noqa: E731
    if name == "emoji":
        return ([cell("ddim", k, 0.0, c) for c in CLIPS for k in STEPS]
                + [cell("ddim", k, 1.0, c) for c in ("clip", "clip+eps") for k in (10, 50)]
                + [cell("ddpm", k) for k in (20, 50, 100)]
                + [cell(s, k) for s in ("dpm++2m", "euler-a") for k in (10, 20, 50)])
    if name == "emoji-latent":
        return ([cell("ddim", k, eta, "shipped") for eta in (0.0, 1.0) for k in STEPS]
                + [cell("ddpm", k, 0.0, "shipped") for k in (20, 50, 100)]
                + [cell(s, k, 0.0, "shipped") for s in ("dpm++2m", "euler-a") for k in (10, 20, 50)])
    return ([cell("ddim", k, 0.0, c) for c in CLIPS for k in STEPS]
            + [cell("ddpm", k) for k in STEPS]
            + [cell(s, k) for s in ("dpm++2m", "euler-a") for k in STEPS]
            + [cell("ddim", k, 1.0, c) for c in CLIPS for k in STEPS]
            + [cell("ddpm", 1000)])


def quick_cells(defaults: dict) -> list[dict]:
    """The regression test's: the page's defaults, and DDIM eta 0 at 10 and 50 steps as shipped."""
    d = dict(sampler=defaults["sampler"], steps=defaults["steps"], eta=defaults.get("eta", 0.0),
             clip="shipped")
    return [d] + [dict(sampler="ddim", steps=k, eta=0.0, clip="shipped") for k in (10, 50)]


def check(res: dict) -> list[str]:
    """The quality regression test (issue 34): at the page's defaults the classifier recognises
    >= 95 %; DDIM eta 0 at 50 steps is not worse than at 10 (accuracy within 2 points, FID within
    10 %) and itself >= 95 %."""
    d, ten, fifty = res["rows"][:3]
    fails = []
    if d["accuracy"] < 0.95:
        fails.append(f"page defaults ({d['sampler']} {d['steps']} steps, eta {d['eta']}): "
                     f"{d['accuracy']:.1%} recognised, under 95 %")
    if fifty["accuracy"] < 0.95 or fifty["accuracy"] < ten["accuracy"] - 0.02:
        fails.append(f"DDIM eta 0: {fifty['accuracy']:.1%} recognised at 50 steps, {ten['accuracy']:.1%} at 10")
    if fifty["fid"] > ten["fid"] * 1.1:
        fails.append(f"DDIM eta 0: FID {fifty['fid']:.2f} at 50 steps, {ten['fid']:.2f} at 10")
    return fails


def variant(model: Path, clip: str, tmp: Path) -> tuple[Path, bool]:
    """The model folder with `clip_sample` set for this cell (symlinks to everything else), and
    whether to pass --clipped-model-output."""
    if clip == "shipped":
        return model, False
    out = tmp / f"model-{clip}"
    if not out.exists():
        out.mkdir()
        for p in model.iterdir():
            if p.name not in ("scheduler", "stepwise.json"):
                (out / p.name).symlink_to(p.resolve())
        (out / "scheduler").mkdir()
        cfg = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
        cfg["clip_sample"] = clip != "noclip"
        (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg, indent=1))
        # The model's own use_clipped_model_output default must not decide the cell.
        info = json.loads((model / "stepwise.json").read_text())
        info.get("defaults", {}).pop("use_clipped_model_output", None)
        (out / "stepwise.json").write_text(json.dumps(info, indent=1))
    return out, clip == "clip+eps"


def run_cell(diffuse: Path, model: Path, info: dict, cell: dict, n_per_class: int, n: int, seed: int,
             guidance: float | None, tmp: Path) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Images in [-1, 1] (latent models: decoded), labels (conditional models), seconds."""
    folder, clipped_eps = variant(model, cell["clip"], tmp)
    base = [str(diffuse), "sample", "--model", str(folder), "--sampler", cell["sampler"],
            "--steps", str(cell["steps"]), "--eta", str(cell["eta"]), "--device", "cpu"]
    if clipped_eps:
        base.append("--clipped-model-output")
    jobs = []
    if info.get("conditional"):
        w = guidance_of(info) if guidance is None else guidance
        for c in range(len(info["class_names"])):
            jobs.append((base + ["--class", str(c), "--guidance", str(w), "--batch", str(n_per_class),
                                 "--seed", str(seed + c)], c))
    else:
        chunk = 50
        for i in range(0, n, chunk):
            jobs.append((base + ["--batch", str(min(chunk, n - i)), "--seed", str(seed + i // chunk)], None))
    images, labels = [], []
    t0 = time.time()
    for i, (args, c) in enumerate(jobs):
        out = tmp / f"out{i}.safetensors"
        subprocess.run(args + ["--output", str(out)], check=True)
        t = load_file(out)
        # A copy: the loaded tensors may map the file, which the next cell writes again.
        x = (t["image"] if "image" in t else t["sample"]).clone()
        images.append(x)
        if c is not None:
            labels.append(torch.full((len(x),), c, dtype=torch.long))
    secs = time.time() - t0
    return torch.cat(images).clamp(-1, 1), (torch.cat(labels) if labels else None), secs


def reference(info: dict, count: int, seed: int):
    """The classifier, its meta, the held-out features and the floor: FID of `count` real training
    images against the held-out set."""
    dataset = DATASET_OF[info["name"]]
    clf, meta = get_classifier(dataset)
    tr, ho = load(dataset, "train"), load(dataset, "heldout")
    f_ho = batched(clf.features, to_model_range(ho.images))
    g = torch.Generator().manual_seed(seed)
    real = to_model_range(tr.images[torch.randperm(len(tr), generator=g)[:count]])
    return clf, meta, f_ho, fid(batched(clf.features, real), f_ho)


def result(info: dict, count: int, seed: int, guidance: float | None, floor: float, meta: dict,
           rows: list[dict]) -> dict:
    return {"model": info["name"], "n": count, "seed": seed, "floor_fid": floor,
            "classifier_heldout_accuracy": meta["heldout_accuracy"],
            "guidance": (guidance_of(info) if guidance is None else guidance) if info.get("conditional") else None,
            "rows": rows}


def measure(model: Path, cells: list[dict], n_per_class: int, n: int, seed: int, guidance: float | None,
            diffuse: Path, jsonl: str | None = None) -> dict:
    info = json.loads((model / "stepwise.json").read_text())
    dataset = DATASET_OF[info["name"]]
    count = n_per_class * len(info["class_names"]) if info.get("conditional") else n
    clf, meta, f_ho, floor = reference(info, count, seed)
    rows = []
    log = open(jsonl, "a") if jsonl else None
    done: dict[str, dict] = {}  # a cell listed twice (the page's defaults may be DDIM at 50) runs once
    with tempfile.TemporaryDirectory() as d:
        for cell in cells:
            key = json.dumps(cell, sort_keys=True)
            if key in done:
                rows.append(dict(done[key]))
                continue
            x, y, secs = run_cell(diffuse, model, info, cell, n_per_class, n, seed, guidance, Path(d))
            if x.shape[-1] == 64 and dataset == "emoji":
                x = lanczos32(x)
            row = dict(cell, fid=fid(batched(clf.features, x), f_ho), seconds=round(secs, 1), n=len(x))
            if y is not None:
                row["accuracy"] = (batched(clf, x).argmax(1) == y).float().mean().item()
            rows.append(row)
            done[key] = row
            if log:
                log.write(json.dumps(row) + "\n")
                log.flush()
            acc = f", accuracy {row['accuracy']:.1%}" if "accuracy" in row else ""
            print(f"{cell['sampler']:8} {cell['steps']:5} eta {cell['eta']:.0f} {cell['clip']:9} "
                  f"FID {row['fid']:7.2f} (floor {floor:.2f}){acc}  [{secs:.0f} s]", flush=True)
    return result(info, count, seed, guidance, floor, meta, rows)


def grid(model: Path, diffuse: Path, seed: int, out: Path) -> None:
    """`samples.png` at the page's defaults (`diffuse sample` with no sampler flags): fashion one
    column per class (8 rows), the others 80 samples, 10 a row."""
    from sampling import grid_png
    info = json.loads((model / "stepwise.json").read_text())
    with tempfile.TemporaryDirectory() as d:
        def draw(extra: list[str], name: str) -> torch.Tensor:
            f = Path(d) / f"{name}.safetensors"
            subprocess.run([str(diffuse), "sample", "--model", str(model), "--device", "cpu", "--seed", str(seed),
                            "--output", str(f)] + extra, check=True)
            t = load_file(f)
            return (t["image"] if "image" in t else t["sample"]).clone().clamp(-1, 1)
        if info.get("conditional"):
            cols = [draw(["--class", str(c), "--batch", "8"], f"c{c}") for c in range(len(info["class_names"]))]
            x = torch.stack(cols, 1).flatten(0, 1)  # row-major: row r holds sample r of every class
            nrow = len(cols)
        else:
            x, nrow = draw(["--batch", "80"], "all"), 10
    grid_png(x, out, nrow=nrow, scale=3 if x.shape[-1] <= 32 else 1)


def markdown(res: dict, command: str) -> str:
    cond = any("accuracy" in r for r in res["rows"])
    head = "| sampler | steps | η | x̂0 clipping | FID | " + ("recognised | " if cond else "") + "s |"
    clip_names = {"clip": "clip (diffusers' default)", "clip+eps": "clip, ε rebuilt", "noclip": "none",
                  "shipped": "as shipped"}
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in res["rows"]:
        eta = f"{r['eta']:g}" if r["sampler"] == "ddim" else "–"
        clip = clip_names.get(r["clip"], r["clip"]) if r["sampler"] in ("ddim", "ddpm") else "(ignored)"
        acc = f" {r['accuracy']:.1%} |" if cond else ""
        lines.append(f"| {r['sampler']} | {r['steps']} | {eta} | {clip} | {r['fid']:.2f} |{acc} {r['seconds']:.0f} |")
    guidance = f", guidance {res['guidance']}" if res["guidance"] is not None else ""
    return (f"{res['n']} samples a cell (seed {res['seed']}{guidance}), `diffuse sample --device cpu`; "
            f"FID in the classifier's feature space against the held-out set; floor (FID of {res['n']} real "
            f"training images against it): **{res['floor_fid']:.2f}**"
            + (f"; the classifier recognises {res['classifier_heldout_accuracy']:.1%} of real held-out images"
               if cond else "") + f". s: wall seconds for the cell on 2 CPU cores shared with other work (not a "
            f"benchmark). Made by `{command}`.\n\n" + "\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a name under assets/models/ or a folder path")
    p.add_argument("--quick", action="store_true", help="only the page defaults and DDIM eta 0 at 10 and 50 steps")
    p.add_argument("--cells", default=None, help="JSON list of cells instead of the full table")
    p.add_argument("--n-per-class", type=int, default=20)
    p.add_argument("--n", type=int, default=200, help="samples a cell for unconditional models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--diffuse", default=str(REPO / "target" / "release" / "diffuse"))
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--jsonl", default=None, help="append each row here as it is measured")
    p.add_argument("--check", action="store_true",
                   help="with --quick: exit 1 unless the page defaults and DDIM's convergence pass (issue 34)")
    p.add_argument("--card", action="store_true",
                   help="write <model>/sampler_table.json and regenerate MODEL_CARD.md with it")
    p.add_argument("--from-jsonl", default=None,
                   help="take the rows from this --jsonl file (several runs) instead of measuring")
    p.add_argument("--grid", action="store_true", help="draw <model>/samples.png at the page's defaults")
    p.add_argument("--threads", type=int, default=int(os.environ.get("STEPWISE_THREADS", "2")))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = Path(args.model)
    if not model.exists():
        model = REPO / "assets" / "models" / args.model
    info = json.loads((model / "stepwise.json").read_text())
    if args.grid:
        grid(model, Path(args.diffuse), args.seed, model / "samples.png")
        if not (args.card or args.quick or args.cells or args.from_jsonl):
            return
    if args.from_jsonl:
        rows = [json.loads(line) for line in Path(args.from_jsonl).read_text().splitlines() if line.strip()]
        count = rows[0]["n"]
        _, meta, _, floor = reference(info, count, args.seed)
        res = result(info, count, args.seed, args.guidance, floor, meta, rows)
    else:
        if args.cells:
            cells = json.loads(args.cells)
        elif args.quick:
            cells = quick_cells(info["defaults"])
        else:
            clips = json.loads((model / "scheduler" / "scheduler_config.json").read_text()).get("clip_sample", True)
            cells = full_cells(info["name"], "clip" if clips else "noclip")
        res = measure(model, cells, args.n_per_class, args.n, args.seed, args.guidance, Path(args.diffuse),
                      args.jsonl)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    if args.card:
        (model / "sampler_table.json").write_text(json.dumps(res, indent=1) + "\n")
        import export
        export.write_any_card(model)
    print(json.dumps(res))
    if args.check:
        fails = check(res)
        for f in fails:
            print(f"FAIL: {f}")
        print(f"quality: {3 - len(fails)} passed, {len(fails)} failed")
        raise SystemExit(1 if fails else 0)


if __name__ == "__main__":
    main()
