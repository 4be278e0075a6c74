"""Denoisers: callables ``model(x, t, cond=None)`` that state their prediction type and cost."""
from stepwise.denoisers.base import (PREDICTIONS, Converted, Denoiser, check_denoiser, LowPrecision, Wrapper, check_prediction, convert,
                            from_x0_eps, to_x0_eps, x0_eps)
from stepwise.denoisers.guidance import (NULL_LABEL, THRESHOLD_CODES, Guided, Thresholding, guided_x0_eps,
                                null_condition, threshold_x0)
from stepwise.denoisers.compat import (DenoiserSet, Retimed, check_compatible, lambda_range, model_costs,
                                      relative_costs, retime, same_schedule)
from stepwise.denoisers.gmm import GaussianMixture, digits_gmm, digits_gmm_conditional, fit_mixture

__all__ = ["PREDICTIONS", "Denoiser", "check_denoiser", "Converted", "LowPrecision", "Wrapper", "check_prediction", "convert", "to_x0_eps",
           "from_x0_eps", "x0_eps", "GaussianMixture", "digits_gmm", "fit_mixture",
           "NULL_LABEL", "THRESHOLD_CODES", "Guided", "Thresholding", "guided_x0_eps", "null_condition",
           "threshold_x0", "digits_gmm_conditional", "DenoiserSet", "Retimed", "check_compatible", "lambda_range",
           "model_costs", "relative_costs", "retime", "same_schedule"]
