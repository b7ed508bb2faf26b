"""Survival-based churn: time-to-event construction, Cox/AFT fitting, PH checks with remedies, validation.

Builds right-censored durations from ``customer_since_date`` and ``last_seen_days_ago`` under the
business rule of the data dictionary (churned = inactive for more than 90 days), and wraps lifelines
(Kaplan-Meier, log-rank, Cox PH, Weibull/log-normal/log-logistic AFT) with the evaluation the churn notebook
needs: held-out concordance, calibration at fixed horizons, IPCW integrated Brier score, RMST and
per-user risk and value. The same helpers run on the real Telco churn data through :data:`TELCO_MAPPING`.

One module per concept (``from helpers import survival`` re-exports every public name):

* :mod:`.data` -- durations and events (inactivity rule or two columns), covariates, model frames;
* :mod:`.cox` -- Kaplan-Meier/RMST, Cox fits, Schoenfeld tests on a seeded sample, stratification remedies;
* :mod:`.aft` -- parametric accelerated-failure-time models and their comparison;
* :mod:`.evaluate` -- predictions, concordance with intervals, calibration, IPCW Brier scores;
* :mod:`.risk` -- recency-aware per-user churn probability, remaining lifetime and value;
* :mod:`.monthly` -- churn from a monthly engagement history (spells, discrete-time model, Markov oracle);
* :mod:`.report` -- scores against the future, per-segment value and the figures;
* :mod:`.telco` -- the IBM Telco churn table as a model frame.
"""

from __future__ import annotations

from .data import (DURATION, EVENT, DAYS_PER_MONTH, time_to_event, panel_covariates, drop_aliased,
    config_covariates, survival_columns, time_to_event_from_columns, truth_covariates, model_frame, split,
    resolve_observation_date)
from .cox import (km_by_group, logrank, rmst, rmst_table, fit_cox, coefficient_table, true_loghr_coverage,
    PH_TEST_SAMPLE, ph_sample, ph_test, PHRemedy, remedy_ph, apply_strata)
from .aft import AFT_FAMILIES, Family, fit_aft, aic_table, weibull_log_hr
from .evaluate import (survival_at, risk_score, harrell_c, c_index, concordance_interval,
    c_index_interval,
    tenure_only_c_index, calibration_table, brier_scores, integrated_brier_score, KMBaseline)
from .risk import (cumulative_hazard_at, recency_odds, InactivityModel, fit_inactivity, churn_risk,
    inactivity_model, true_churn_probability)
from .monthly import (ENGAGEMENT_STATES, SPELLS, engagement_matrix, engagement_matrix_file, read_monthly,
    read_last_month, spell_codes, last_spell_codes, months_in_horizon,
    MonthlyChurnModel, fit_monthly_churn, monthly_churn_risk, markov_oracle)
from .report import (TRUTH_COLUMNS, truth_columns, future_churn_truth, recency_calibration,
    plot_recency_calibration, segment_value, plot_forest)
from .telco import TELCO_MAPPING, TELCO_CATEGORICAL, load_telco, TELCO_MTM_INTERACTIONS, telco_interactions

__all__ = ["DURATION", "EVENT", "DAYS_PER_MONTH", "time_to_event", "panel_covariates", "drop_aliased",
           "config_covariates", "survival_columns", "time_to_event_from_columns", "truth_covariates", "model_frame", "split",
           "resolve_observation_date", "km_by_group", "logrank", "rmst", "rmst_table", "fit_cox",
           "coefficient_table", "true_loghr_coverage", "PH_TEST_SAMPLE", "ph_sample", "ph_test", "PHRemedy",
           "remedy_ph", "apply_strata", "AFT_FAMILIES", "Family", "fit_aft", "aic_table", "weibull_log_hr",
           "survival_at", "risk_score", "harrell_c", "c_index", "concordance_interval", "c_index_interval",
           "tenure_only_c_index", "calibration_table", "brier_scores", "integrated_brier_score",
           "KMBaseline", "cumulative_hazard_at", "recency_odds", "InactivityModel", "fit_inactivity",
           "churn_risk", "inactivity_model", "true_churn_probability", "ENGAGEMENT_STATES", "SPELLS",
           "engagement_matrix", "engagement_matrix_file", "read_monthly", "read_last_month", "spell_codes", "last_spell_codes",
           "months_in_horizon", "MonthlyChurnModel", "fit_monthly_churn", "monthly_churn_risk", "markov_oracle",
           "TRUTH_COLUMNS", "truth_columns", "future_churn_truth", "recency_calibration", "plot_recency_calibration", "segment_value", "plot_forest", "TELCO_MAPPING", "TELCO_CATEGORICAL",
           "load_telco", "TELCO_MTM_INTERACTIONS", "telco_interactions"]
