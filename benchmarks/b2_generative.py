"""B2, generative route at equal wall time: ae-kmeans / ae-dm vs pixel-space DM vs random real images.

Every distiller gets the same wall-clock budget (``time_budget``, set-up included: the autoencoder and,
for the soft-label row, the teacher train inside it). All rows, random real included, are judged by the
same reduced DC protocol (datadistill.synth.protocol.evaluate_protocol): fresh ConvNets of the stated
width, SGD momentum 0.9, lr 0.01 cut x0.1 at half, batch 256, DSA augmentation, the stated number of
models and epochs, final-epoch test accuracy on the full test split.

    python benchmarks/b2_generative.py --data-dir ../shared/data --ipc 10 --seeds 2 --budget 60
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
METHODS = ("random", "dm", "ae-kmeans", "ae-dm", "ae-kmeans+soft")
ONE_PASS = ("ae-kmeans", "rded")  # methods that make their set in one pass (iterations=1) inside the budget


def make_set(method: str, dataset, ipc: int, seed: int, args):
    from datadistill.synth import get_distiller, random_real_subset

    if method == "random":
        t = time.perf_counter()
        return random_real_subset(dataset, ipc, seed=seed), time.perf_counter() - t
    name, _, variant = method.partition("+")
    params = {"ipc": ipc, "random_state": seed, "device": args.device, "time_budget": args.budget,
              "iterations": 1 if name in ONE_PASS else 100_000, "model_kwargs": {"width": args.width}}
    if variant == "soft":
        params["soft_labels"] = True
        params["temperature"] = args.temperature
    t = time.perf_counter()
    out = get_distiller(name, **params).fit(dataset)
    return out, time.perf_counter() - t


def run(args) -> dict:
    import torch

    import datadistill
    from datadistill.evaluation import environment
    from datadistill.synth.protocol import evaluate_protocol

    torch.set_num_threads(args.threads)
    dataset = datadistill.load(Path(args.data_dir) / f"{args.dataset}.npz")
    rows = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        for method in args.methods:
            distilled, seconds = make_set(method, dataset, args.ipc, seed, args)
            t = time.perf_counter()
            evals = evaluate_protocol(dataset, distilled, n_models=args.eval_models, epochs=args.eval_epochs,
                                      augmentation="dsa", model_kwargs={"width": args.width},
                                      architectures=("convnet",), device=args.device, seed=seed)
            eval_seconds = time.perf_counter() - t
            timings = distilled.meta.get("timings", {})
            latent = distilled.meta.get("latent", {})
            row = {"method": method, "seed": seed, "ipc": args.ipc,
                   "accuracies": [r["test_accuracy"] for r in evals],
                   "distill_seconds": seconds, "eval_seconds": eval_seconds,
                   "iterations": timings.get("iterations_done"),
                   "stopped_by_time_budget": timings.get("stopped_by_time_budget"),
                   "autoencoder_steps": (latent.get("autoencoder_training") or {}).get("steps"),
                   "autoencoder_mse": (latent.get("autoencoder_training") or {}).get("reconstruction_mse"),
                   "latent_bytes_per_sample": latent.get("latent_bytes_per_sample"),
                   "decoded_bytes_per_sample": int(np.prod(distilled.X.shape[1:]) * 4),
                   "decoder_bytes": latent.get("decoder_bytes"),
                   "teacher": (distilled.meta.get("soft_labels") or {}).get("teacher")}
            rows.append(row)
            print(f"seed {seed} {method:<16} acc {np.mean(row['accuracies']) * 100:.2f} "
                  f"distil {seconds:.0f}s iterations {row['iterations']} ae steps {row['autoencoder_steps']} "
                  f"eval {eval_seconds:.0f}s", flush=True)
    env = environment(args.device)
    return {"benchmark": "b2_generative", "dataset": args.dataset, "ipc": args.ipc, "budget_seconds": args.budget,
            "convnet": "the published network: on 28x28 the first convolution is padded by 3",
            "soft_temperature": args.temperature,
            "evaluation": {"protocol": "dc (reduced)", "architecture": "convnet", "width": args.width,
                           "n_models": args.eval_models, "epochs": args.eval_epochs, "augmentation": "dsa"},
            "torch_threads": args.threads, "environment": env, "wall_seconds": time.perf_counter() - started,
            "command": "python benchmarks/b2_generative.py " + " ".join(shlex.quote(a) for a in args.argv),
            "rows": rows}


def summary(result: dict) -> list[dict]:
    out = []
    for method in dict.fromkeys(r["method"] for r in result["rows"]):
        rs = [r for r in result["rows"] if r["method"] == method]
        per_seed = [float(np.mean(r["accuracies"])) for r in rs]
        accs = [a for r in rs for a in r["accuracies"]]
        first = rs[0]
        out.append({"method": method, "mean": 100 * float(np.mean(accs)), "std_over_seeds": 100 * float(np.std(per_seed)),
                    "n_models": len(accs), "n_seeds": len(rs),
                    "distill_seconds": float(np.mean([r["distill_seconds"] for r in rs])),
                    "iterations": [r["iterations"] for r in rs],
                    "autoencoder_steps": [r["autoencoder_steps"] for r in rs],
                    "bytes_per_sample": first["latent_bytes_per_sample"] or first["decoded_bytes_per_sample"],
                    "decoder_bytes": first["decoder_bytes"]})
    return out


def markdown(result: dict) -> str:
    ev = result["evaluation"]
    env = result["environment"]
    lines = [f"# B2 generative route at equal wall time — {result['dataset']}, IPC {result['ipc']} (CPU)", "",
             f"**Reduced protocol, not the published B2 numbers.** Every distiller had the same wall-clock budget of "
             f"{result['budget_seconds']:g} s per run (set-up included: autoencoder training and, for +soft, the "
             f"teacher train inside it), torch threads {result['torch_threads']}. All rows, random real included, "
             f"were judged the same way: datadistill.synth.protocol.evaluate_protocol with ConvNet width "
             f"{ev['width']} (depth 3; {result.get('convnet', 'the padding-1 variant on 28x28, now convnet-p1')}), "
             f"{ev['n_models']} models x {ev['epochs']} epochs per seed, "
             "DSA augmentation, SGD lr 0.01 (x0.1 at half), final-epoch accuracy on the 10,000 test images.", "",
             "Bytes per sample: the latent form (latent_dim float32) for ae-*, pixels as float32 otherwise; the "
             "latent form also needs the decoder once (its size in the last column).", "",
             f"Machine: {env['machine']}; {env['platform']}; torch {env['versions']['torch']}; {env['date']}. "
             f"Shared and loaded: read ratios between rows, not seconds. Total wall {result['wall_seconds'] / 60:.1f} min.",
             "", f"Command: `{result['command']}`", "",
             "| method | test acc. % (mean ± std over seeds) | models | distil s | iterations per seed | AE steps | "
             "bytes / sample | decoder bytes |", "|---|---|---|---|---|---|---|---|"]
    for s in summary(result):
        lines.append(f"| {s['method']} | {s['mean']:.2f} ± {s['std_over_seeds']:.2f} ({s['n_seeds']} seeds) | "
                     f"{s['n_models']} | {s['distill_seconds']:.0f} | "
                     f"{', '.join('—' if i is None else str(i) for i in s['iterations'])} | "
                     f"{', '.join('—' if i is None else str(i) for i in s['autoencoder_steps'])} | "
                     f"{s['bytes_per_sample']} | {s['decoder_bytes'] or '—'} |")
    lines += ["", *notes(result)]
    return "\n".join(lines) + "\n"


def notes(result: dict) -> list[str]:
    """What the table does not show: teacher quality, budget use, when the latent form saves storage."""
    out = ["Notes:", ""]
    teachers = [r["teacher"] for r in result["rows"] if r.get("teacher")]
    if teachers:
        accs = ", ".join(f"{100 * t['validation_accuracy']:.1f}%" for t in teachers if t.get("validation_accuracy"))
        who = " and ".join(m for m in ("+soft", "rded") if any(m in r["method"] for r in result["rows"]))
        out.append(f"- {who}: the teacher (ConvNet, trained inside the budget: {', '.join(str(t['steps']) for t in teachers)}"
                   f" Adam steps) reached {accs} on held-out training rows; its probabilities at temperature "
                   f"{result.get('soft_temperature', 4.0):g} are "
                   "stored as soft labels, and the protocol trains the student on them with plain cross entropy "
                   "(temperature 1: evaluate_protocol does not read a temperature from the artifact).")
    kmeans = [r for r in result["rows"] if r["method"] == "ae-kmeans"]
    if kmeans:
        out.append(f"- ae-kmeans stops after k-means: it used {np.mean([r['distill_seconds'] for r in kmeans]):.0f} s of "
                   f"the {result['budget_seconds']:g} s (its autoencoder may train for 60% of the budget).")
    latent = [r for r in result["rows"] if r.get("latent_bytes_per_sample")]
    if latent:
        r = latent[0]
        saved = r["decoded_bytes_per_sample"] - r["latent_bytes_per_sample"]
        out.append(f"- Storage: the latent form saves {saved} bytes per sample but needs the decoder "
                   f"({r['decoder_bytes']} bytes) once, so it is smaller than the decoded set only from "
                   f"{int(np.ceil(r['decoder_bytes'] / saved))} synthetic samples on (here {10 * result['ipc']}).")
    return out


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--budget", type=float, default=60.0, help="wall-clock seconds per distillation run")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--width", type=int, default=32, help="ConvNet width for matching, teacher and evaluation")
    p.add_argument("--eval-models", type=int, default=2)
    p.add_argument("--eval-epochs", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--temperature", type=float, default=4.0, help="soft-label temperature of the +soft rows")
    p.add_argument("--tag", default="", help="suffix of the result files (b2_generative_DATASET[_TAG])")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--render", metavar="JSON", help="only re-render the Markdown table of a saved result")
    args = p.parse_args(argv)
    if args.render:
        result = json.loads(Path(args.render).read_text())
        Path(args.render).with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
        return
    args.argv = argv
    args.methods = [m for m in args.methods.split(",") if m]
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"b2_generative_{args.dataset}" + (f"_{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
