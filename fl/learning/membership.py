"""Membership inference: does a model give away which rows it was trained on?

Two black-box attacks on a model's predicted probabilities, as pure functions
of numbers (no runs, no files), so an audit, a test or a notebook computes
them the same way:

- **loss threshold** (Yeom et al., "Privacy Risk in Machine Learning", CSF
  2018): a row whose loss under the model is low is guessed a member. The
  score is minus the row's log loss.
- **calibrated, offline LiRA** (Carlini et al., "Membership Inference Attacks
  From First Principles", S&P 2022, the offline variant): some rows are
  easy for any model, so a low loss alone says little. Reference models
  trained *without* the audited rows say how confident a model is on each
  row when the row is out; the score is how far above that the audited
  model's confidence lies, in standard deviations of the reference
  confidences (the "logit-scaled" confidence log p/(1-p) of the true class,
  which is close to Gaussian). With few reference models the variance is
  one for all rows (Carlini's "fixed variance"), the mean is each row's.

Either attack gives a score per row (higher = more likely a member). Its ROC
against the true membership gives the AUC (0.5: the attack cannot tell) and
the true-positive rate at a low false-positive rate (1 %, 0.1 %), which is
what matters for privacy: an attack that is sure of a few members leaks them,
whatever its average. An audit finds a *lower bound* on what leaks, never
a proof that nothing does.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

EPS = 1e-15  # probabilities are clipped here, as score_classifier clips them for the log loss
FPR_TARGETS = (0.01, 0.001)
MIN_SIGMA = 1e-6  # references that agree to the last digit (a deterministic model) do not divide by zero


def true_class_proba(proba: np.ndarray, y_index: np.ndarray) -> np.ndarray:
    """Each row's probability of its own label (``y_index``: the label's column in ``proba``)."""
    proba = np.asarray(proba, dtype=np.float64)
    return proba[np.arange(len(proba)), np.asarray(y_index, dtype=np.int64)]


def row_losses(proba: np.ndarray, y_index: np.ndarray) -> np.ndarray:
    """Per-row log loss, probabilities clipped to [1e-15, 1] (the run's own loss, row by row)."""
    return -np.log(np.clip(true_class_proba(proba, y_index), EPS, 1.0))


def logit_confidence(proba: np.ndarray, y_index: np.ndarray) -> np.ndarray:
    """log p − log(1 − p) of the true class, with 1 − p summed from the other columns (exact when p is near 1).

    Carlini et al. scale confidences this way because the result is close to
    Gaussian across models, which the calibrated attack assumes.
    """
    proba = np.asarray(proba, dtype=np.float64)
    p = true_class_proba(proba, y_index)
    others = proba.sum(axis=1) - p
    return np.log(np.clip(p, EPS, None)) - np.log(np.clip(others, EPS, None))


def loss_threshold_scores(losses: np.ndarray) -> np.ndarray:
    """Yeom et al.'s attack: the lower the loss, the likelier a member (any threshold; the ROC sweeps it)."""
    return -np.asarray(losses, dtype=np.float64)


def lira_offline_scores(target: np.ndarray, references: np.ndarray, fixed_variance: bool = True) -> np.ndarray:
    """Carlini et al.'s offline likelihood-ratio attack: how unlikely the target's confidence is under OUT.

    ``target``: the audited model's logit confidence per row (n,);
    ``references``: the same from K reference models trained without any
    audited row (K, n). Per row a Gaussian is fitted to the K OUT
    confidences; the score is (target − mean) / std, monotone in the one-sided
    test's 1 − p-value, so the ROC is the same. ``fixed_variance``: one
    variance over all rows (the paper's choice below ~64 references: K = 4
    per-row variances are noise).
    """
    target = np.asarray(target, dtype=np.float64)
    refs = np.atleast_2d(np.asarray(references, dtype=np.float64))
    if refs.shape[1] != target.shape[0]:
        raise ValueError(f"references have {refs.shape[1]} rows, the target {target.shape[0]}")
    if refs.shape[0] < 2:
        raise ValueError("the calibrated attack needs at least 2 reference models")
    mean = refs.mean(axis=0)
    var = refs.var(axis=0, ddof=1)
    sigma = np.sqrt(var.mean()) if fixed_variance else np.sqrt(var)
    return (target - mean) / np.maximum(sigma, MIN_SIGMA)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest true-positive rate among thresholds whose false-positive rate is at most ``target``.

    A step, never interpolated: with n non-members the smallest non-zero
    FPR is 1/n, so below it this is the TPR at no false positive at all.
    """
    fpr, tpr = np.asarray(fpr), np.asarray(tpr)
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def auc(scores: np.ndarray, is_member: np.ndarray) -> float:
    """The area under the ROC: the chance that a random member scores above a random non-member."""
    return float(roc_auc_score(np.asarray(is_member, dtype=bool), np.asarray(scores, dtype=np.float64)))


def attack_result(scores: np.ndarray, is_member: np.ndarray,
                  fpr_targets: Sequence[float] = FPR_TARGETS) -> dict[str, Any]:
    """AUC, TPR at each FPR target, the counts and the full ROC of one attack (scores: higher = member)."""
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    n_in, n_out = int(is_member.sum()), int((~is_member).sum())
    if n_in == 0 or n_out == 0:
        raise ValueError("an attack needs both members and non-members to be scored")
    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    return {"auc": float(roc_auc_score(is_member, scores)),
            "tpr_at_fpr": {f"{t:g}": tpr_at_fpr(fpr, tpr, t) for t in fpr_targets},
            "n_members": n_in, "n_nonmembers": n_out, "chance_sd": chance_sd(n_in, n_out), "fpr": fpr, "tpr": tpr}


def chance_sd(n_members: int, n_nonmembers: int) -> float:
    """The standard deviation of the AUC of an attack that cannot tell at all (Mann-Whitney under the null):
    an AUC within about two of them of 0.5 is no evidence of leakage with so few rows."""
    return math.sqrt((n_members + n_nonmembers + 1) / (12.0 * n_members * n_nonmembers))


def thin_roc(fpr: np.ndarray, tpr: np.ndarray, max_points: int = 400) -> tuple[list[float], list[float]]:
    """An ROC curve small enough for a JSON file and a chart: its first points kept (the low false-positive
    rates that matter), the rest evenly thinned."""
    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    if len(fpr) <= max_points:
        return fpr.tolist(), tpr.tolist()
    head = max_points // 4
    rest = np.linspace(head, len(fpr) - 1, max_points - head).round().astype(int)
    keep = np.unique(np.concatenate([np.arange(head), rest]))
    return fpr[keep].tolist(), tpr[keep].tolist()
