"""Customer lifetime value: BG/NBD, Pareto/NBD and Gamma-Gamma maximum-likelihood models on scipy with
numerically stable log-likelihoods, intervals, conditional expectations, probability alive,
calibration/holdout checks, per-customer and per-segment value, and the CDNOW reference data.

Models follow the scikit-learn/lifelines conventions: ``Model().fit(summary)`` returns the fitted model
with ``params_``, ``summary()``, ``log_likelihood_`` and ``plot(ax=)``.
"""

from .clv import CustomerValue, customer_value, fit_by_segment, next_period_error, segment_value
from .data import cdnow_dir, load_cdnow_summary, load_cdnow_transactions, rfm_summary
from .holdout import holdout_table, holdout_totals, tracking
from .models import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter, spend_frequency_correlation
from .plots import plot_calibration_holdout, plot_params, plot_period_transactions, plot_spend_fit, plot_tracking

BGNBD, ParetoNBD, GammaGamma = BetaGeoFitter, ParetoNBDFitter, GammaGammaFitter

__all__ = ["BetaGeoFitter", "ParetoNBDFitter", "GammaGammaFitter", "BGNBD", "ParetoNBD", "GammaGamma",
           "CustomerValue", "customer_value", "segment_value", "fit_by_segment", "next_period_error",
           "cdnow_dir", "load_cdnow_summary", "load_cdnow_transactions", "rfm_summary",
           "holdout_table", "holdout_totals", "tracking", "spend_frequency_correlation",
           "plot_calibration_holdout", "plot_params", "plot_period_transactions", "plot_spend_fit", "plot_tracking"]
