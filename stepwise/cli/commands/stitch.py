"""stepwise stitch: the T-Stitch sweep (early steps on a small model) and the joint search.

T-Stitch gets every free option the joint search has: the sweep runs the first k of N steps on
the small model (fraction k/N; 0 = large model only, 1 = small only) for the config's preset AND
for the ``stitch.tstitch_presets`` best baselines (preset x discretization x order x analytic first
step, ranked on the search noise), and at each budget the best T-Stitch plan within it is the
one compared. Then (``stitch.search``) a joint search of the model column and the solver decisions
under each budget (objective ``teacher_frechet``: paired, by default), started from the best
T-Stitch plans of every swept preset that fit the budget (ranked on the search noise), once per
search seed (``stitch.search_seeds``: search noise and proposals; the final noise is disjoint).
With ``search.skip`` (a trained pair) the joint search also picks each step's skip mask in either
network (AutoDiffusion's per-step architecture; ``cli.options.skip_setup``).
Quality, on fresh noise: the paired Fréchet distance to the large model's reference ODE solve of
the same noise, with a 95% paired-bootstrap interval; the comparison is reported budget by budget
(a table and the Pareto plot), each ratio with its interval or as a lower bound when unresolved,
never as a median of ratios across budgets; with several seeds also the median and range over
seeds per budget. For the exact pair the exact-moment distance is reported too; for a trained
pair with ``stitch.feature_net`` also the domain-feature Fréchet distance to the held-out test
images (models must record a training split that left them out).

Files in the run directory (every write atomic; a rerun of the same directory reuses finished
points and budgets): ``config.json``, ``points/*.json`` (one per evaluated plan), ``search/``
(per-budget search results), ``front/front_<k>.json`` (schedule files of the joint front),
``stitch.json`` (summary), ``report.md`` + figures, ``report.html``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from stepwise import denoisers, samplers
from stepwise.data import load_digits
from stepwise.io import savez_atomic, write_json_atomic
from stepwise.cli import options, runtime
from stepwise.denoisers.timing import measured_costs
from stepwise.evaluation import html_report, markdown_report, pareto_front, plot_lines, plot_pareto, sample_frechet
from stepwise.io import write_text_atomic
from stepwise.search import protocol
from stepwise.search.evaluator import baseline_plans, reference_endpoints
from stepwise.search.space import plan_hash
from stepwise.search.stitching import joint_front, model_only_space, save_front, stitch_evaluator
from stepwise.search.strategies import EvolutionOptions
from stepwise.solvers import plan as solver_plan
from stepwise.solvers.transforms import sweep_fractions, t_stitch

EXAMPLE = """examples:
  stepwise stitch --config configs/stitch_digits.py                 # exact mixture pair, NFE 10
  stepwise stitch --config configs/stitch_digits.py --config.nfe=6 --config.stitch.search=False
  stepwise stitch --config configs/stitch_digits.py --config.stitch.pair=checkpoints \\
      --config.stitch.small_checkpoint=runs/digits_unet_small --config.stitch.large_checkpoint=runs/digits_unet_large \\
      --config.search.skip=True     # the joint search also skips network blocks per step (both networks)
"""


def add_parser(sub):
    return runtime.config_parser(sub, "stitch", "T-Stitch sweep and joint model/solver search under a cost budget",
                         EXAMPLE)


def build_pair(cfg, s: dict, sched):
    """(small, large, schedule, exact target moments (mean, cov) or None, info) for the configured pair."""
    if s["pair"] == "gmm":
        large = runtime.build_model(cfg, sched)
        small = denoisers.fit_mixture(load_digits(cfg.model.size, flat=True, dtype=np.float64)[0], int(s["small_components"]),
                                      seed=cfg.model.fit_seed, covariance=s["small_covariance"], schedule=sched)
        info = {"small": f"{s['small_components']}-component {s['small_covariance']} mixture",
                "large": f"{cfg.model.components}-component {cfg.model.covariance} mixture",
                "quality": "exact Fréchet distance to the large mixture's moments"}
        return small, large, sched, large.moments(), info
    if s["pair"] == "checkpoints":
        if not s["small_checkpoint"] or not s["large_checkpoint"]:
            raise SystemExit("error: pair=checkpoints needs config.stitch.small_checkpoint and large_checkpoint")
        small, large = runtime.load_model_path(s["small_checkpoint"]), runtime.load_model_path(s["large_checkpoint"])
        info = {"small": s["small_checkpoint"], "large": s["large_checkpoint"],
                "quality": "paired Fréchet distance to the large model's reference solve"}
        return small, large, large.schedule, None, info
    raise SystemExit(f"error: config.stitch.pair={s['pair']!r}; allowed: ['gmm', 'checkpoints']")


def held_out_target(s: dict) -> "protocol.FeatureMoments | None":
    """``stitch.feature_net``'s held-out test images (:func:`cli.runtime.held_out_data`), or None."""
    if not s["feature_net"]:
        return None
    if s["pair"] != "checkpoints":
        raise SystemExit(f"error: config.stitch.feature_net is for pair=checkpoints (trained models); "
                         f"pair={s['pair']!r} is scored exactly")
    return runtime.held_out_data(s["feature_net"], {f"config.stitch.{k}": s[k] for k in
                                                    ("small_checkpoint", "large_checkpoint")},
                                 "config.stitch.feature_net")


class PointRunner:
    """Runs plans on the fixed fresh noise; one JSON per plan in ``points/`` (resume-safe).

    Quality is the paired Fréchet distance to ``ref`` (the large model's reference solve of the same
    noise) with its replicates on the shared bootstrap rows ``idx``, so any two points compare paired;
    with ``held_out`` (:class:`search.protocol.FeatureMoments`) also the feature-space distance to held-out
    images (``heldout_fd``), its replicates on the same rows."""

    def __init__(self, models, sched, x_T, ref, idx, moments, batch_size, repeats, directory: Path, log=print,
                 held_out=None):
        self.models, self.sched, self.x_T, self.moments, self.held_out = models, sched, x_T, moments, held_out
        self.ref = protocol.paired_reference(ref, idx)   # the reference endpoints and shared bootstrap rows
        self.bs, self.repeats, self.dir, self.log = int(batch_size), int(repeats), directory, log
        self.dir.mkdir(parents=True, exist_ok=True)
        self._warm = set()  # step counts whose executable is compiled (one warm-up per count)

    def _once(self, plan):
        return samplers.chunked(lambda xb: samplers.sample(self.models, self.sched, plan, xb), self.x_T, self.bs)

    def run(self, name: str, plan, extra: dict) -> dict:
        path = self.dir / f"{name}.json"
        h = plan_hash(plan)
        if path.exists():
            row = json.loads(path.read_text())
            if row.get("plan_hash") == h and (self.held_out is None or "heldout_fd" in row):
                return row
        if plan.num_steps not in self._warm:  # compile + warm up once per executable
            samplers.sample(self.models, self.sched, plan, jnp.asarray(self.x_T[:self.bs])).block_until_ready()
            self._warm.add(plan.num_steps)
        walls = []
        for _ in range(max(1, self.repeats)):
            t0 = time.perf_counter()
            x = self._once(plan)
            walls.append(time.perf_counter() - t0)
        quality, reps = protocol.paired_frechet(x, self.ref)
        row = {"name": name, **extra, "nfe": plan.nfe(), "steps": plan.num_steps,
               "quality": quality, "quality_reps": reps.tolist(), "wall_s": float(min(walls)),
               "model_column": np.asarray(plan.model).tolist(), "plan_hash": h}
        if self.moments is not None:
            row["frechet_exact"] = sample_frechet(x, *self.moments)
        if self.held_out is not None:
            fd, fd_reps = self.held_out.frechet(x, self.ref.idx)
            row.update(heldout_fd=fd, heldout_fd_reps=fd_reps.tolist())
        write_json_atomic(path, row)
        held = f"  held-out FD {row['heldout_fd']:.4g}" if "heldout_fd" in row else ""
        self.log(f"  {name:34s} cost {extra.get('cost', float('nan')):8.4g}  paired {quality:.6g}{held}  "
                 f"wall {row['wall_s']:.3f}s")
        return row


def best_within(rows: list[dict], budget: float) -> dict | None:
    """The best-quality row whose cost fits ``budget``."""
    fit = [r for r in rows if r["cost"] <= budget * (1 + 1e-9)]
    return min(fit, key=lambda r: r["quality"]) if fit else None


def _metric(row: dict, key: str) -> tuple[float, np.ndarray]:
    return row[key], np.asarray(row[f"{key}_reps"])


METRICS = (("quality", ""), ("heldout_fd", " (held-out FD)"))   # row key, label suffix


def compare_by_budget(budgets, sweep: list[dict], fronts: dict, n: int) -> list[dict]:
    """Budget by budget: the best T-Stitch plan within it (any preset) against each search front's
    best plan within it, paired on the same fresh noise: both with intervals, the ratio T-Stitch /
    search with its interval (or a lower bound when the search's distance is unresolved). Rows
    that carry a held-out feature distance are compared on it too (same plans, same rows)."""
    out = []
    for b in budgets:
        t = best_within(sweep, b)
        if t is None:
            continue
        line = {"budget": b, "T-Stitch": t["name"], "T-Stitch cost": t["cost"]}
        for key, suffix in METRICS:
            if key in t:
                line[f"T-Stitch quality{suffix}"] = str(protocol.interval(*_metric(t, key), n, nonnegative=True))
        for label, f in fronts.items():
            q = best_within(f["rows"], b)
            if q is None:
                continue
            line[f"{label} cost"] = q["cost"]
            for key, suffix in METRICS:
                if key not in t or key not in q:
                    continue
                r = protocol.ratio(*_metric(t, key), *_metric(q, key))
                line[f"{label} quality{suffix}"] = str(protocol.interval(*_metric(q, key), n, nonnegative=True))
                line[f"T-Stitch / {label}{suffix}"] = str(r)
                line[f"_{label}{suffix}_ratio"] = r.to_dict()
        out.append(line)
    return out


def summarize_over_seeds(comparison: list[dict], variants: dict[str, list[str]]) -> None:
    """Adds, per budget and search variant run with several seeds, the median and range over seeds
    of the ratio T-Stitch / search (``variants``: variant -> its per-seed front labels). A seed
    whose ratio is only a lower bound is counted, not averaged in."""
    for line in comparison:
        for variant, labels in variants.items():
            if len(labels) < 2:
                continue
            for _, suffix in METRICS:
                ratios = [line.get(f"_{lb}{suffix}_ratio") for lb in labels]
                ratios = [r for r in ratios if r is not None]
                if not ratios:
                    continue
                summ = protocol.summarize_seeds([r["value"] for r in ratios])
                bounds = sum(r["lower_bound_only"] for r in ratios)
                text = (f"median {summ['median']:.3g}x [{summ['min']:.3g}, {summ['max']:.3g}] over "
                        f"{summ['n_seeds']} seeds" if summ["n_seeds"] else "no resolved ratio")
                if bounds:
                    text += f" ({bounds} below the noise floor)"
                line[f"T-Stitch / {variant}{suffix}, seeds"] = text
                line[f"_{variant}{suffix}_seeds"] = {**summ, "lower_bounds": bounds}


def tstitch_presets(plan, name: str, sched, evaluator, top: int) -> list[tuple[str, object]]:
    """The config's preset first, then the ``top`` best baselines at its NFE (every preset x
    discretization x order x analytic first step) by search score of the LARGE model alone."""
    base = [(n, p.replace(model=np.ones(p.num_steps, np.int32))) for n, p in baseline_plans(plan.nfe(), sched)]
    if top <= 0 or not base:
        return [(name, plan)]
    scores = evaluator.score([p for _, p in base])
    ranked = [base[i] for i in np.argsort(scores, kind="stable")[:top]]
    own = plan_hash(plan.replace(model=np.ones(plan.num_steps, np.int32)))
    return [(name, plan)] + [(n, p) for n, p in ranked if plan_hash(p) != own]


def _budgets(s: dict, sweep_costs) -> list[float]:
    if s["budgets"]:
        return sorted(float(b) for b in s["budgets"].split(",") if b.strip())
    return sorted(set(round(float(c), 12) for c in sweep_costs))


STITCH_CHOICES = {"pair": ("gmm", "checkpoints"), "cost": ("declared", "measured"),
                  "objective": ("teacher_frechet", "teacher_rmse"), "small_covariance": ("diag", "full")}
STITCH_MINIMA = {"reference_rtol": 1e-12, "tolerance": 0.0, "mean_tol": 0.0, "points": 0, "tstitch_presets": 0, "resamples": 10,
                 "num_samples": 2, "batch_size": 1, "cost_batch": 1, "cost_repeats": 1, "timing_repeats": 1,
                 "small_components": 1, "search_samples": 2, "generations": 0, "population": 2, "top_k": 1,
                 "children": 1, "tstitch_seeds": 0}


def run_sweep(presets, runner: PointRunner, costs, points: int | None, every_k: bool = False) -> list[dict]:
    """T-Stitch (the first k steps on the small model) of every preset at the sweep's fractions
    (``points`` thins them); with ``every_k`` at every k too, so that a budget comparison sees every
    T-Stitch plan (the thinned ones are marked ``sweep_point``: the plotted sweep and its budgets)."""
    sweep = []
    for pi, (pname, base) in enumerate(presets):
        nb = base.num_steps
        shown = set(sweep_fractions(nb, points))
        for f in sweep_fractions(nb, None if every_k else points):
            p = t_stitch(base, f)
            k = int(round(f * nb))
            row = runner.run(f"tstitch{pi:02d}_{k:03d}", p, {
                "method": "T-Stitch", "preset": pname, "fraction": f, "small_steps": k,
                "cost": solver_plan.cost(p, costs)})
            sweep.append({**row, "sweep_point": f in shown})
    return sweep


def search_seeds(s: dict, default: int) -> list[int]:
    """``stitch.search_seeds`` as distinct integers (empty: ``[default]``)."""
    parts = [x.strip() for x in str(s["search_seeds"]).split(",") if x.strip()]
    try:
        seeds = [int(x) for x in parts] or [int(default)]
    except ValueError:
        raise SystemExit(f"error: config.stitch.search_seeds={s['search_seeds']!r}; allowed: comma-separated "
                         f"integers") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SystemExit(f"error: config.stitch.search_seeds={s['search_seeds']!r}; allowed: distinct "
                         f"integers >= 0")
    return seeds


def check_stitch_section(s: dict) -> None:
    """Every value of ``config.stitch`` with a fixed set or a floor, checked before any work."""
    for k, allowed in STITCH_CHOICES.items():
        if s[k] not in allowed:
            raise SystemExit(f"error: config.stitch.{k}={s[k]!r}; allowed: {list(allowed)}")
    for k, lo in STITCH_MINIMA.items():
        if not s[k] >= lo:
            raise SystemExit(f"error: config.stitch.{k}={s[k]!r} is invalid; allowed: >= {lo}")
    for b in filter(None, (x.strip() for x in str(s["budgets"]).split(","))):
        try:
            ok = float(b) > 0
        except ValueError:
            ok = False
        if not ok:
            raise SystemExit(f"error: config.stitch.budgets={s['budgets']!r}; allowed: comma-separated positive costs")


def check_skip(search, s: dict) -> None:
    """``search.skip`` in ``stitch``: masks are searched jointly with the model column (the joint
    search's budgets), so it needs a trained pair with skippable units and ``stitch.search``."""
    if not search.skip:
        return
    if s["pair"] != "checkpoints" or not s["search"]:
        raise SystemExit(f"error: search.skip=True needs config.stitch.pair='checkpoints' (networks with skippable "
                         f"units) and config.stitch.search=True; got pair={s['pair']!r}, search={s['search']!r}")
    if search.skip_schedule != "joint":
        raise SystemExit(f"error: search.skip_schedule={search.skip_schedule!r} is not available in stitch; "
                         "allowed: ['joint'] (the model column, solver decisions and masks in one search)")


def run(args) -> int:
    import jax

    cfg = args.config
    if cfg.x64:
        jax.config.update("jax_enable_x64", True)
    s = cfg.stitch.to_dict()
    check_stitch_section(s)
    runtime.build_plan(cfg, runtime.build_schedule(cfg))     # nfe, solver, discretization: before any file
    seed_final = int(cfg.seed) + int(s["final_seed_offset"])
    seeds = search_seeds(s, int(cfg.seed))
    if seed_final in seeds:
        raise SystemExit(f"error: config.stitch.search_seeds contains the final noise seed {seed_final} "
                         f"(config.seed + stitch.final_seed_offset); search and final noise must be disjoint")
    check_skip(cfg.search, s)
    held_out = held_out_target(s)
    workdir = runtime.make_workdir("stitch", args.workdir)
    runtime.save_config(workdir, cfg)
    log = print
    sched = runtime.build_schedule(cfg)
    small, large, sched, moments, info = build_pair(cfg, s, sched)
    try:
        models = denoisers.DenoiserSet([small, large], sched, retime_schedules=bool(s["retime"]),
                                       mean_tol=float(s["mean_tol"]))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    plan = runtime.build_plan(cfg, sched)
    n = plan.num_steps

    # ---- costs: declared and measured; the front uses relative units (large model = 1 per evaluation)
    declared = models.costs
    cost_file = workdir / "costs.json"
    if cost_file.exists():
        measured = np.asarray(json.loads(cost_file.read_text())["measured_s"])
    else:
        measured = measured_costs(models.models, int(s["cost_batch"]), int(s["cost_repeats"]))
        write_json_atomic(cost_file, {"declared": declared, "measured_s": measured,
                                              "batch": int(s["cost_batch"])})
    if s["cost"] not in ("declared", "measured"):
        raise SystemExit(f"error: config.stitch.cost={s['cost']!r}; allowed: ['declared', 'measured']")
    costs = denoisers.relative_costs(declared if s["cost"] == "declared" else measured)
    log(f"pair: small = {info['small']}, large = {info['large']}")
    log(f"cost per evaluation (small/large): declared {declared[0]:.6g}/{declared[1]:.6g} "
        f"(ratio {declared[1] / declared[0]:.2f}); measured {measured[0] * 1e3:.3f}/{measured[1] * 1e3:.3f} ms "
        f"at batch {s['cost_batch']} (ratio {measured[1] / measured[0]:.2f})")

    # ---- T-Stitch sweep on fresh noise
    num = int(s["num_samples"])
    x_T = np.asarray(jax.random.normal(jax.random.key(seed_final), (num,) + tuple(large.data_shape))
                     * sched.prior_std(), np.float32)
    bs = min(int(s["batch_size"]), num)
    ref_file, rtol = workdir / "reference.npz", float(s["reference_rtol"])
    ref = None
    if ref_file.exists():
        with np.load(ref_file) as z:
            if "rtol" in z and float(z["rtol"]) == rtol and z["ref"].shape[0] == num:
                ref = z["ref"]
    if ref is None:
        ref = reference_endpoints(large, sched, x_T, bs, rtol=rtol)
        savez_atomic(ref_file, ref=ref, rtol=np.float64(rtol))
    idx = protocol.bootstrap_indices(num, int(s["resamples"]), seed_final)
    runner = PointRunner(models, sched, x_T, ref, idx, moments, bs, s["timing_repeats"], workdir / "points", log,
                         held_out=held_out)
    fractions = sweep_fractions(n, int(s["points"]) or None)
    evaluators = {sd: stitch_evaluator(models, sched, reference=large, objective=s["objective"],
                                       num_samples=int(s["search_samples"]), seed=sd,
                                       batch_size=int(s["batch_size"]), rtol=rtol,
                                       log=log) for sd in seeds}
    evaluator = evaluators[seeds[0]]
    presets = tstitch_presets(plan, f"{cfg.solver}/{cfg.discretization}", sched, evaluator, int(s["tstitch_presets"]))
    log(f"T-Stitch sweep: {len(presets)} presets (the config's and the best baselines by search score) x "
        f"{len(fractions)} fractions x {num} samples")
    sweep = run_sweep(presets, runner, costs, int(s["points"]) or None, every_k=bool(s["search"]))
    own = [r for r in sweep if r["preset"] == presets[0][0] and r["sweep_point"]]
    q_large = own[0]["quality"]
    ok = [r for r in own if r["quality"] <= q_large * (1 + float(s["tolerance"]))]
    best = max(ok, key=lambda r: r["fraction"])
    summary = {"pair": info, "preset": {"solver": cfg.solver, "order": cfg.order, "nfe": plan.nfe(),
                                        "discretization": cfg.discretization},
               "costs": {"declared": declared.tolist(), "measured_s": measured.tolist(),
                         "declared_ratio": float(declared[1] / declared[0]),
                         "measured_ratio": float(measured[1] / measured[0]), "unit": s["cost"]},
               "num_samples": num, "seed": seed_final, "sweep": sweep,
               "tolerance": float(s["tolerance"]), "max_fraction": best["fraction"],
               "max_fraction_quality": best["quality"], "large_only_quality": q_large,
               "max_fraction_speedup": own[0]["wall_s"] / best["wall_s"],
               "max_fraction_cost_saving": own[0]["cost"] / best["cost"],
               "quality_metric": "paired Fréchet distance to the large model's reference solve of the same noise",
               "bootstrap": {"resamples": int(s["resamples"]), "seed": seed_final},
               "reference_rtol": float(s["reference_rtol"]),
               "tstitch_presets": [name for name, _ in presets]}
    log(f"largest fraction within {100 * float(s['tolerance']):.0f}% of the large model: {best['fraction']:.2f} "
        f"(quality {best['quality']:.6g} vs {q_large:.6g}); wall-time speed-up {summary['max_fraction_speedup']:.2f}x")

    # ---- joint search
    if s["search"]:
        budgets = _budgets(s, [r["cost"] for r in own])
        fronts, variants = run_searches(cfg, s, models, sched, plan, [p for _, p in presets], budgets, evaluators,
                                        costs, runner, workdir, info, log)
        summary["comparison"] = compare_by_budget(budgets, sweep, fronts, num)
        summarize_over_seeds(summary["comparison"], variants)
        summary["search"] = {k: {"search_s": v["search_s"], "schedule_files": v["schedule_files"], "seed": v["seed"]}
                             for k, v in fronts.items()}
        summary["search_seeds"] = seeds
        for line in summary["comparison"]:
            log(f"budget {line['budget']:.4g}: T-Stitch {line['T-Stitch']} {line['T-Stitch quality']}; "
                + "; ".join(f"{k} {line[k]}" for k in line if k.startswith("T-Stitch / ")))
    else:
        fronts = {}
    if held_out is not None:
        summary["held_out"] = {"metric": held_out.label, "images": held_out.n, "feature_net": s["feature_net"]}

    summary["compiles"] = samplers.trace_count()
    write_json_atomic(workdir / "stitch.json", summary)
    write_report(workdir, summary, sweep, fronts)
    log(f"wrote {workdir / 'stitch.json'} and {workdir / 'report.md'}")
    return 0


def run_searches(cfg, s: dict, models, sched, plan, base_plans, budgets, evaluators: dict, costs, runner,
                 workdir: Path, info: dict, log) -> tuple[dict, dict[str, list[str]]]:
    """The joint (and model-only) budgeted searches, one front per search seed, each scored on the
    final noise by ``runner``; returns (fronts by label, variant -> its per-seed labels). With one
    seed the labels are the variants' names ("joint", "model-only"), else "<variant> s<seed>"."""
    evolution = EvolutionOptions(population=int(s["population"]), top_k=int(s["top_k"]),
                                 children=int(s["children"]), timesteps_only=0, generations=int(s["generations"]))
    variants = [("joint", False)] + ([("model-only", True)] if s["model_only"] else [])
    fronts, labels = {}, {v: [] for v, _ in variants}
    # search.skip: the joint search also chooses each step's skip mask in both networks (sensitivity
    # measured on the first search seed's noise, never the final noise)
    units, make_hooks, shares = options.skip_setup(options.section("search", {**cfg.search.to_dict(), "seed": next(iter(evaluators))}),
                                                   models, costs)
    for variant, model_only in variants:
        masks = bool(units) and not model_only
        space = (model_only_space(plan.nfe(), sched, len(models)) if model_only
                 else options.search_space(cfg.search, plan.nfe(), sched, num_models=len(models), unit_counts=units))
        masked = ({"hooks_for": lambda b, space=space: make_hooks(space, b), "unit_shares": shares} if masks else {})
        for sd, evaluator in evaluators.items():
            label = variant if len(evaluators) == 1 else f"{variant} s{sd}"
            tag = label.replace(" ", "_")
            log(f"joint search ({label}) over {len(budgets)} budgets")
            t0 = time.perf_counter()
            rows = joint_front(models, space, base_plans, budgets, evaluator, costs=costs, options=evolution,
                               seed=sd, workdir=workdir / "search" / tag, log=log, seed_count=int(s["tstitch_seeds"]),
                               **masked)
            search_s = time.perf_counter() - t0
            final = [runner.run(f"{tag}_{k:03d}", r["plan"], {"method": label, "budget": r["budget"], "cost": r["cost"],
                                                             "search_score": r["score"]})
                     for k, r in enumerate(rows)]
            paths = save_front(rows, workdir / "front" / tag, {"schedule": sched.describe(), "pair": info,
                                                               "costs": np.asarray(costs).tolist(), "search_seed": sd})
            fronts[label] = {"rows": final, "search_s": round(search_s, 2), "schedule_files": paths, "seed": sd}
            labels[variant].append(label)
    return fronts, labels


def write_report(workdir: Path, summary: dict, sweep: list, fronts: dict) -> None:
    pts = [{"method": r["method"], "cost": r["cost"], "quality": r["quality"]} for r in sweep]
    for label, f in fronts.items():
        pts += [{"method": label, "cost": r["cost"], "quality": r["quality"]} for r in f["rows"]]
    pareto = plot_pareto(pts, cost="cost", quality="quality", label="method",
                         title=f"paired distance vs cost, NFE {summary['preset']['nfe']}")
    own = [r for r in sweep if r["preset"] == summary["tstitch_presets"][0] and r.get("sweep_point", True)]
    series = {"T-Stitch": ([r["fraction"] for r in own], [r["quality"] for r in own])}
    lines = plot_lines(series, xlabel="fraction of steps on the small model", ylabel="paired Fréchet distance",
                       logy=True, title="T-Stitch sweep (config preset)")
    front_idx = pareto_front([p["cost"] for p in pts], [p["quality"] for p in pts])
    c = summary["costs"]
    head = (f"Pair: small = {summary['pair']['small']}, large = {summary['pair']['large']}. Quality: "
            f"{summary['quality_metric']} (lower is better), {summary['num_samples']} fresh samples "
            f"(seed {summary['seed']}). Cost per evaluation: declared ratio {c['declared_ratio']:.2f}, measured "
            f"ratio {c['measured_ratio']:.2f}; front in {c['unit']} units relative to the large model.\n\n"
            f"Largest fraction of steps on the small model within {100 * summary['tolerance']:.0f}% of the large "
            f"model's quality: {summary['max_fraction']:.2f} (quality {summary['max_fraction_quality']:.6g} vs "
            f"{summary['large_only_quality']:.6g}); wall-time speed-up {summary['max_fraction_speedup']:.2f}x, "
            f"cost saving {summary['max_fraction_cost_saving']:.2f}x.")
    if "held_out" in summary:
        head += (f"\n\nAlso scored on data no model or search saw: {summary['held_out']['metric']} "
                 f"(feature net {summary['held_out']['feature_net']}), same samples and bootstrap rows.")
    if len(summary.get("search_seeds", [])) > 1:
        head += f"\n\nSearch seeds {summary['search_seeds']} (one front each; final noise seed {summary['seed']})."
    cols = ("preset", "fraction", "small_steps", "cost", "quality", "heldout_fd", "wall_s", "model_column")
    sections = [("Summary", head), ("Pareto front (all evaluated plans)", pareto),
                ("T-Stitch sweep", lines), ("Sweep points", [{k: r[k] for k in cols if k in r} for r in sweep]),
                ("Pareto-optimal points", [pts[i] for i in front_idx])]
    if "comparison" in summary:
        sections.append(("Budget by budget: best T-Stitch plan (any preset) vs each search front, paired "
                         "distance with 95% intervals; ratio = T-Stitch / search",
                         [{k: v for k, v in line.items() if not k.startswith("_")} for line in summary["comparison"]]))
        for label, f in fronts.items():
            sections.append((f"Search front: {label}", [{k: r.get(k) for k in ("budget", "cost", "search_score",
                                                                                "quality", "heldout_fd", "nfe",
                                                                                "steps", "model_column") if k in r}
                                                        for r in f["rows"]]))
    write_text_atomic(workdir / "report.md", markdown_report("stepwise stitch", sections, image_dir=workdir))
    write_text_atomic(workdir / "report.html", html_report("stepwise stitch", sections))
