"""The assessment metrics of the S&I challenge scorer: RMSE, PCC, SRC, KRC, % within 0.5 / 1.0."""

import math

import numpy as np
from scipy import stats


def score_metrics(predicted, reference) -> dict[str, float]:
    """Agreement between predicted and human scores. Correlations are NaN when undefined
    (fewer than two responses, or a constant side), never a misleading number."""
    pred = np.asarray(predicted, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if pred.shape != ref.shape or pred.ndim != 1:
        raise ValueError(f"need two equal-length 1-D score lists, got {pred.shape} and {ref.shape}")
    if len(pred) == 0:
        raise ValueError("no scores to compare")
    error = np.abs(pred - ref)
    correlatable = len(pred) > 1 and np.ptp(pred) > 0 and np.ptp(ref) > 0
    nan = math.nan
    return {
        "n": int(len(pred)),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "pcc": float(stats.pearsonr(pred, ref).statistic) if correlatable else nan,
        "src": float(stats.spearmanr(pred, ref).statistic) if correlatable else nan,
        "krc": float(stats.kendalltau(pred, ref).statistic) if correlatable else nan,
        "within_0_5": float(100 * np.mean(error <= 0.5 + 1e-9)),
        "within_1_0": float(100 * np.mean(error <= 1.0 + 1e-9)),
    }
