"""Denoisers: callables ``model(x, t, cond=None)`` that state their prediction type and cost."""
from denoisers.base import (PREDICTIONS, Converted, Denoiser, LowPrecision, Wrapper, check_prediction, convert,
                            from_x0_eps, to_x0_eps, x0_eps)
from denoisers.guidance import (NULL_LABEL, THRESHOLD_CODES, Guided, Thresholding, guided_x0_eps,
                                null_condition, threshold_x0)
from denoisers.gmm import GaussianMixture, digits_gmm, digits_gmm_conditional, fit_mixture, load_digits_data

__all__ = ["PREDICTIONS", "Denoiser", "Converted", "LowPrecision", "Wrapper", "check_prediction", "convert", "to_x0_eps",
           "from_x0_eps", "x0_eps", "GaussianMixture", "digits_gmm", "fit_mixture", "load_digits_data",
           "NULL_LABEL", "THRESHOLD_CODES", "Guided", "Thresholding", "guided_x0_eps", "null_condition",
           "threshold_x0", "digits_gmm_conditional"]
