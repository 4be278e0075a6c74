"""Solvers: SolverPlan (what a run is), the exponential-integrator maths, and presets that build plans."""
from stepwise.solvers.coefficients import (StepGeometry, corrector_weights, exact_moments, interpolation_weights,
                                           lagrange_monomials, phi, phis, predictor_weights, step_weights)
from stepwise.solvers.plan import (CORRECTOR_CODES, DATA, EXPANSION_CODES, HISTORY, MAX_ORDER, NOISE,
                                   PREDICTION_CODES, VARIANT_CODES, Evaluation, SolverPlan, Violation,
                                   allowed_bases, allowed_orders, cost, evaluations, evaluations_per_model,
                                   evaluations_per_step, make_plan, nfe, stack_plans, validate, violations)
from stepwise.solvers.transforms import sweep_fractions, t_stitch
from stepwise.solvers.presets import (PRESETS, Preset, build_preset, ddim, deis_tab, dpm_solver, dpm_solver_pp,
                             dpm_solver_pp_singlestep, dpm_solver_singlestep, euler, heun, ipndm,
                             multistep_orders, preset, unipc)

__all__ = [
    "SolverPlan", "make_plan", "validate", "violations", "Violation", "allowed_orders", "allowed_bases",
    "evaluations", "Evaluation", "nfe", "evaluations_per_step", "evaluations_per_model", "cost", "stack_plans",
    "t_stitch", "sweep_fractions",
    "NOISE", "DATA", "HISTORY", "MAX_ORDER", "PREDICTION_CODES", "VARIANT_CODES", "EXPANSION_CODES",
    "CORRECTOR_CODES", "StepGeometry", "phi", "phis", "exact_moments", "lagrange_monomials", "interpolation_weights",
    "predictor_weights", "corrector_weights", "step_weights", "ddim", "dpm_solver", "dpm_solver_pp",
    "dpm_solver_singlestep", "dpm_solver_pp_singlestep", "unipc", "deis_tab", "ipndm", "euler", "heun",
    "multistep_orders", "PRESETS", "Preset", "preset", "build_preset",
]
