"""Lookalike modelling: score every user's resemblance to a seed audience, and evaluate it honestly.

A *seed* (customers with an outcome -- converters, responders, churners --, a segment, or a list of ids)
is expanded with two scorers: a cosine-similarity-to-centroid baseline and a supervised propensity model in
the positive-unlabelled (PU) framing -- seed members are *labelled* positives, everybody else is
*unlabelled* (a mix of unseen positives and negatives). The model's out-of-fold probabilities are
calibrated to ``P(labelled | x)``; under "selected completely at random" labelling, ``P(positive | x) =
P(labelled | x) / c`` with ``c = P(labelled | positive)`` (Elkan & Noto, 2008).

**Evaluation is prospective when it can be.** The default seed is an outcome audience of the observed
period (e.g. the customers who converted most); the candidates (everybody else who has not churned) are
ranked, and the ranking is scored against what candidates *do next period* (planted truth's
``future_outcomes.parquet``): AUC, precision and lift at the 1/5/10 % audience sizes a planner buys, beside
the cosine baseline and a random ranking. Without a next period (a real snapshot such as Telco) a random
part of the seed is hidden among the candidates and found again (hide-and-find, said plainly).

**No circularity.** The model never sees the columns that define its seed (:func:`defining_columns`):
the seed's own column; for a churn seed also the recency column it is computed from and the churn-risk
score of notebook 06 (which conditions on recency); and for a recency seed the churn flag and risk. Then
:func:`leak_check` drops any remaining feature group that on its own separates seed from non-seed almost
perfectly (single-feature AUC >= 0.97), and says so. A segment seed is circular by nature (the segment is
a function of the features): it is kept only as a labelled sanity check.

Feature labels, units and reason-code wording come from the run configuration (:mod:`helpers.config`),
never from the synthetic panel's column meanings.

One module per concept (``from helpers import lookalike`` re-exports every public name):

* :mod:`.seeds` -- seed audiences and the no-circularity rule (:func:`defining_columns`);
* :mod:`.features` -- the model matrix from the run configuration and the leak check;
* :mod:`.model` -- the cosine baseline and the cross-fitted propensity model on a seeded training sample;
* :mod:`.evaluation` -- the hide-and-find and prospective experiments and their metrics and figures;
* :mod:`.reasons` -- permutation importance, reason codes and the ``lookalike_scores`` artifact.
"""

from __future__ import annotations

from .seeds import (CHURN_SCORE, Seed, seed_from_audience, seed_from_segment, seed_from_outcome,
    seed_from_config_outcome, seed_from_ids, defining_columns)
from .features import (LEAK_AUC, SOURCE_OF_PARTY, SOURCES, MULTI_SEP, Features, build_features, drop_groups,
    leak_check, seed_features, build_seed_features, standardize, single_feature_auc, column_stats, CHUNK_ROWS,
    rows_matrix, rows_mean)
from .model import (Estimator, Calibration, MAX_LABELLED, MAX_UNLABELLED, PREDICT_ROWS, CosineLookalike, make_estimator,
    training_sample, PropensityLookalike, pu_adjust)
from .evaluation import (PLANNER_SHARES, holdout_split, LookalikeRun, run_lookalike, run_prospective,
    FUTURE_COLUMNS, load_future_outcomes, future_target, hits_at, precision_at, lift_at, gains_curve,
    calibration_table, expected_calibration_error, planted_segment, top_rows, SANITY_MAX_USERS, sample_rows,
    random_scores, evaluate, plot_gains, plot_calibration)
from .reasons import (grouped_permutation_importance, model_importance, seed_profile, explain_importance,
    reason_codes, scores_frame, plot_importance)

__all__ = ["CHURN_SCORE", "Seed", "seed_from_audience", "seed_from_segment", "seed_from_outcome",
           "seed_from_config_outcome", "seed_from_ids", "defining_columns", "LEAK_AUC", "SOURCE_OF_PARTY",
           "SOURCES", "MULTI_SEP", "Features", "build_features", "drop_groups", "leak_check",
           "seed_features", "build_seed_features", "single_feature_auc", "standardize", "column_stats", "CHUNK_ROWS",
           "rows_matrix", "rows_mean",
           "Estimator", "Calibration", "MAX_LABELLED", "MAX_UNLABELLED", "PREDICT_ROWS",
           "CosineLookalike", "make_estimator", "training_sample", "PropensityLookalike", "pu_adjust",
           "PLANNER_SHARES", "holdout_split", "LookalikeRun", "run_lookalike", "run_prospective",
           "FUTURE_COLUMNS", "load_future_outcomes", "future_target", "hits_at", "precision_at", "lift_at",
           "gains_curve", "calibration_table", "expected_calibration_error", "planted_segment", "top_rows",
           "SANITY_MAX_USERS", "sample_rows", "random_scores", "evaluate", "plot_gains", "plot_calibration", "grouped_permutation_importance",
           "model_importance", "seed_profile", "explain_importance", "reason_codes", "scores_frame",
           "plot_importance"]
