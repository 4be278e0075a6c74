"""Few-step solvers on a trained network: do the rankings of the exact mixture carry over?

Command (2-core CPU, ~10 minutes; the model and the domain classifier come from
`python benchmarks/train_denoisers.py --dataset fashion ... --tag _p2v --feature-steps 3000`,
see RESULTS_denoisers.md):

    python benchmarks/solvers_trained.py --model runs/bench-train/fashion_unet_small_p2v \\
        --feature-net runs/bench-train/features_fashion32 --samples 1000

For the same ``--samples`` class-conditional noises (label i mod 10, guidance scale 1) every solver
of ``CONFIGS`` at each NFE and discretization reports: RMSE to the endpoint of a diffrax reference
solve of the same noises (Dopri8, rtol 1e-5, float32), the Fréchet distance in the domain
classifier's feature space to the first 1000 Fashion-MNIST test images, and the fraction of samples
that classifier assigns to the class asked for. Writes ``<model>/solvers_trained.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from stepwise import samplers
from stepwise import solvers
from stepwise.data import load_fashion_mnist
from stepwise.training import load_denoiser
from stepwise.io import write_text_atomic
from stepwise.evaluation.features import classifier_accuracy, load_feature_net

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling benchmark script
from train_denoisers import class_labels, domain_features  # noqa: E402

from stepwise.evaluation import frechet_between  # noqa: E402

# (label, preset, options)
CONFIGS = [
    ("ddim", "ddim", {}),
    ("heun", "heun", {}),
    ("dpm_solver(2M)", "dpm_solver", {"order": 2}),
    ("dpm_solver_pp(2M)", "dpm_solver_pp", {"order": 2}),
    ("dpm_solver_pp(3M)", "dpm_solver_pp", {"order": 3}),
    ("dpm_solver_pp(2S)", "dpm_solver_pp_singlestep", {"order": 2}),
    ("unipc(bh2,3)", "unipc", {"order": 3}),
    ("deis_tab(3)", "deis_tab", {"order": 3}),
    ("ipndm", "ipndm", {}),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/bench-train/fashion_unet_small_p2v")
    ap.add_argument("--feature-net", default="runs/bench-train/features_fashion32")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--nfes", default="5,10,20")
    ap.add_argument("--discretizations", default="logsnr,time_quadratic")
    ap.add_argument("--batch", type=int, default=250)
    args = ap.parse_args(argv)
    t_start = time.time()
    model = load_denoiser(args.model, which="latest")
    net = load_feature_net(args.feature_net)
    test, _ = load_fashion_mnist("test", pad_to_32=model.data_shape[0] == 32)
    held = domain_features(net, test[:1000, ..., None])
    sched = model.schedule
    x_T = jax.random.normal(jax.random.key(0), (args.samples,) + model.data_shape)
    labels = jnp.asarray(class_labels(args.samples))

    ref = samplers.chunked(lambda x, y: samplers.reference_solve(model, sched, x, rtol=1e-5, cond=y), x_T,
                           args.batch, labels)
    ref = np.clip(ref, -1.0, 1.0)

    def quality(x: np.ndarray) -> dict:
        return dict(domain_fd=frechet_between(domain_features(net, x), held),
                    class_accuracy=classifier_accuracy(net, x, class_labels(len(x))))

    results = {"model": args.model, "samples": args.samples, "device": str(jax.devices()[0].device_kind),
               "reference": dict(quality(ref), seconds=round(time.time() - t_start, 1)), "rows": []}
    print(json.dumps(results), flush=True)
    for nfe in (int(n) for n in args.nfes.split(",")):
        for label, name, opts in CONFIGS:
            for disc in args.discretizations.split(","):
                plan = solvers.build_preset(name, nfe, sched, disc, **opts)
                x = samplers.chunked(lambda xb, yb: samplers.sample(model, sched, plan, xb, cond=yb), x_T,
                                     args.batch, labels)
                x = np.clip(x, -1.0, 1.0)
                row = dict(nfe=nfe, solver=label, discretization=disc,
                           rmse=float(np.sqrt(np.mean((x - ref) ** 2))), **quality(x))
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
    results["seconds"] = round(time.time() - t_start, 1)
    write_text_atomic(os.path.join(args.model, "solvers_trained.json"), json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
