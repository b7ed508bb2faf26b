"""The Explorer's data functions in one namespace: what the Flask layer and the tests call, by view.

Everything the web app shows is computed from the artifacts of one pipeline run by plain functions
returning JSON-ready dicts, so the numbers can be unit-tested without a browser; the Flask layer
(:mod:`helpers.explorer.app`) only validates input and serialises them. The functions live by view:

* :mod:`.loading` -- the run's panel and artifacts, read through :mod:`helpers.artifacts` and
  :class:`helpers.panel.Panel` only;
* :mod:`.segmap` -- segment map and similarity; :mod:`.persona` -- first screen and persona card;
* :mod:`.heatmap` -- affinity heatmap, defining traits and action lines (from the affinity table);
* :mod:`.audiences` -- the lookalike stage's audience (read, never fitted), profiles, comparisons, exports;
* :mod:`.questions` -- "customers talking about X"; :mod:`.wstats` -- weighted figures on the statistics core;
* :mod:`.codes` -- the panel's columns as integer codes (computed once) and profiles from per-cell sums.
"""

from __future__ import annotations

from .. import artifacts  # noqa: F401 - tests patch artifacts.stale_reason through this name
from .audiences import (STAGE_METRICS, audience_frame, audience_profile, check_size, compare,  # noqa: F401
                        comparison_indicators, export_list, export_name, lookalike_payload, profile_comparison,
                        seed_mask, stage_audience, stage_candidates, stage_evaluation, stage_lookalike_rows,
                        stage_scores)
from .codes import column_codes, comparison_variables, family_lookup, indicator_profile  # noqa: F401
from .common import (CHANNEL_INDEX_TYPES, CHANNELS, MAKE_TARGET, TIER_HIGH, TIER_LOW, UnknownSegment,  # noqa: F401
                     check_segment, jsonable, label_of, run_config, unit_of, value_label)
from .heatmap import (action_lines, affinity_heatmap, defining_attributes, heatmap_options,  # noqa: F401
                      top_traits)
from .loading import (AFFINITY_COLUMNS, ARTIFACTS, SEGMENT_COLUMNS, ExplorerData, MissingArtifacts,  # noqa: F401
                      artifact_status, header_facts, load_explorer_data, overview, stale_artifacts)
from .persona import (DEMOGRAPHICS, channel_minutes, churn_risk_summary, churn_summary, persona_card,  # noqa: F401
                      segment_table, spend_metric, value_summary, weighted_distribution)
from .questions import (QUESTION_FILTERS, question_audience, question_options, regions, text_posts,  # noqa: F401
                        topic_posts)
from .segmap import (axis_sides, axis_title_lines, map_features, pca_2d, segment_centroids,  # noqa: F401
                     segment_map, segment_sizes, similarity, standardised_features)
from .wstats import (audience_estimate, weighted_mean, weighted_mean_ci, weighted_mean_sd,  # noqa: F401
                     weighted_median, weighted_share_ci)
