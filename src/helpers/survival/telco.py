"""The IBM Telco churn table read as a survival model frame, with its month-to-month interactions."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .data import DURATION, EVENT, drop_aliased


#: How the Telco columns map onto the panel's concepts (documented in the churn notebook).
TELCO_MAPPING = {
    "tenure": "duration (months since sign-up; the snapshot's follow-up = customer_since_date -> obs)",
    "Churn": "event (Yes = churned, the analogue of churned_in_last_90_days; No = right-censored)",
    "MonthlyCharges": "avg_monthly_spend (USD/month)",
    "SeniorCitizen": "age band 65+ (demographic)",
    "gender, Partner, Dependents": "demographics (cf. marital_status, presence_of_children)",
    "Contract, PaymentMethod, PaperlessBilling": "account covariates (no panel analogue; Contract is the "
                                                  "natural segment-like stratum)",
    "PhoneService ... StreamingMovies": "product-usage covariates (cf. the behavioural channel minutes)",
    "TotalCharges": "NOT used: ~ tenure x MonthlyCharges, it leaks the duration into the covariates",
}


TELCO_CATEGORICAL = ["gender", "Partner", "Dependents", "PhoneService", "MultipleLines", "InternetService",
                     "OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport", "StreamingTV",
                     "StreamingMovies", "Contract", "PaperlessBilling", "PaymentMethod"]


def load_telco(path: str | Path, log_charges: bool = True, drop_aliased_dummies: bool = True
               ) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Read the IBM Telco churn CSV into a model frame (``duration`` in months, ``event``, dummies).

    ``log_charges=False`` gives the usual "plain" specification with ``MonthlyCharges`` entering linearly
    (column ``MonthlyCharges``); ``True`` uses ``log_monthly_charges``, whose effect on the log hazard is
    closer to linear. Aliased dummies are dropped (``drop_aliased_dummies``): the six
    ``<service>_No_internet_service`` dummies all equal ``InternetService_No`` and
    ``MultipleLines_No_phone_service`` is ``1 - PhoneService_Yes``; ``frame.attrs["aliased"]`` says what
    each dropped column equals.

    Rows with ``tenure == 0`` (11 new customers, all censored at 0) carry no information and are dropped.
    Returns the frame and the dummy groups (original column -> its dummy columns) for :func:`remedy_ph`.
    The covariates are the snapshot's values at the end of each customer's follow-up (services and charges
    at churn or at the extract date), not at sign-up.
    """
    raw = pd.read_csv(path)
    need = {"tenure", "Churn", "MonthlyCharges", "SeniorCitizen", *TELCO_CATEGORICAL}
    missing = need - set(raw.columns)
    if missing:
        raise ValueError(f"{path} lacks Telco columns {sorted(missing)}")
    bad = ~raw["Churn"].isin(["Yes", "No"])
    if bad.any():
        raise ValueError(f"{path}: column 'Churn' must be Yes/No; {int(bad.sum())} rows are not "
                         f"(first at data row {int(np.flatnonzero(bad.to_numpy())[0]) + 2})")
    raw = raw[raw["tenure"] > 0].reset_index(drop=True)
    dummies = pd.get_dummies(raw[TELCO_CATEGORICAL], drop_first=True, dtype=float)
    charges = raw["MonthlyCharges"].astype(float)
    charge_col = (pd.DataFrame({"log_monthly_charges": np.log(charges)}) if log_charges
                  else pd.DataFrame({"MonthlyCharges": charges}))
    frame = pd.concat([
        pd.DataFrame({DURATION: raw["tenure"].astype(float), EVENT: (raw["Churn"] == "Yes").astype(int)}),
        dummies, pd.DataFrame({"SeniorCitizen": raw["SeniorCitizen"].astype(float)}), charge_col,
    ], axis=1)

    def tidy(c: str) -> str:
        return c.replace(" ", "_").replace("(", "").replace(")", "")

    frame.columns = [tidy(c) for c in frame.columns]
    aliased: dict[str, str] = {}
    if drop_aliased_dummies:
        cov, aliased = drop_aliased(frame.drop(columns=[DURATION, EVENT]))
        frame = pd.concat([frame[[DURATION, EVENT]], cov], axis=1)
    groups = {c: [tidy(d) for d in dummies if d.startswith(c + "_") and tidy(d) in frame]
              for c in TELCO_CATEGORICAL}
    frame.attrs["aliased"] = aliased
    return frame, groups


#: Covariates whose effect is allowed to differ for month-to-month contracts in :func:`telco_interactions`.
TELCO_MTM_INTERACTIONS = ["log_monthly_charges", "InternetService_Fiber_optic",
                          "PaymentMethod_Electronic_check", "OnlineSecurity_Yes", "TechSupport_Yes",
                          "SeniorCitizen"]


def telco_interactions(frame: pd.DataFrame, columns: Sequence[str] = tuple(TELCO_MTM_INTERACTIONS)
                       ) -> pd.DataFrame:
    """Add ``<col>_x_mtm`` interactions with the month-to-month contract (the stratum where PH fails).

    Month-to-month customers churn early and for different reasons than contract customers; letting the
    key price/service effects differ by contract type is the better-specified model of the notebook.
    """
    need = {"Contract_One_year", "Contract_Two_year", *columns} - set(frame.columns)
    if need:
        raise ValueError(f"telco_interactions needs columns {sorted(need)} (from load_telco(log_charges=True))")
    out = frame.copy()
    mtm = 1 - out["Contract_One_year"] - out["Contract_Two_year"]
    for c in columns:
        out[f"{c}_x_mtm"] = out[c] * mtm
    return out
