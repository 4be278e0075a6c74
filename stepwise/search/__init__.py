"""Solver-schedule search: genome <-> SolverPlan codec with exact NFE, paired evaluator with a
cache, ask/tell strategies (evolution, predictor-screened evolution), orbax-resumable state,
versioned JSON schedule files, and the end-to-end job (``run_search``)."""
from stepwise.search.evaluator import OBJECTIVES, Evaluator, baseline_plans, reference_endpoints
from stepwise.search.predictor import Predictor, RankNet, featurize, pairwise_rank_loss, spearman
from stepwise.search.schedule_file import load_plan, load_schedule, plan_from_dict, plan_to_dict, save_plan
from stepwise.search.space import (Genome, PlanView, SearchSpace, crossover, decode, describe_plan, encode,
                          genome_hash, mutate, plan_hash, random_genome, repair, view)
from stepwise.search.state import restore_state, save_state
from stepwise.search.strategies import (Evolution, EvolutionOptions, Hooks, PredictorOptions, PredictorSearch,
                                        SearchState, make_strategy, run_generations)
from stepwise.search.run import FinalOptions, final_evaluation, run_search, write_report

__all__ = [
    "Genome", "SearchSpace", "PlanView", "encode", "decode", "view", "repair", "mutate", "crossover",
    "random_genome", "plan_hash", "genome_hash", "describe_plan",
    "Evaluator", "OBJECTIVES", "baseline_plans", "reference_endpoints",
    "Predictor", "RankNet", "featurize", "pairwise_rank_loss", "spearman",
    "Evolution", "PredictorSearch", "SearchState", "make_strategy", "EvolutionOptions", "PredictorOptions",
    "Hooks", "run_generations",
    "save_state", "restore_state", "save_plan", "load_plan", "load_schedule", "plan_to_dict", "plan_from_dict",
    "run_search", "FinalOptions", "final_evaluation", "write_report",
]
