"""Solvers: SolverPlan (what a run is), the exponential-integrator maths, and presets that build plans."""
from solvers.coefficients import (StepGeometry, corrector_weights, exact_moments, interpolation_weights,
                                  lagrange_monomials, phi, predictor_weights)
from solvers.plan import (CORRECTOR_CODES, DATA, EXPANSION_CODES, HISTORY, MAX_ORDER, NOISE,
                          PREDICTION_CODES, VARIANT_CODES, SolverPlan, evaluations_per_step,
                          make_plan, nfe, stack_plans, validate)
from solvers.presets import (PRESETS, Preset, build_preset, ddim, deis_tab, dpm_solver, dpm_solver_pp,
                             dpm_solver_pp_singlestep, dpm_solver_singlestep, euler, heun, ipndm,
                             multistep_orders, preset, unipc)

__all__ = [
    "SolverPlan", "make_plan", "validate", "nfe", "evaluations_per_step", "stack_plans",
    "NOISE", "DATA", "HISTORY", "MAX_ORDER", "PREDICTION_CODES", "VARIANT_CODES", "EXPANSION_CODES",
    "CORRECTOR_CODES", "StepGeometry", "phi", "exact_moments", "lagrange_monomials", "interpolation_weights",
    "predictor_weights", "corrector_weights", "ddim", "dpm_solver", "dpm_solver_pp",
    "dpm_solver_singlestep", "dpm_solver_pp_singlestep", "unipc", "deis_tab", "ipndm", "euler", "heun",
    "multistep_orders", "PRESETS", "Preset", "preset", "build_preset",
]
