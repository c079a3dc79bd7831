"""A privacy audit of a finished run: membership inference against its final global model.

``run_audit(run_dir)`` rebuilds the run's data from its config.json (the
split is a pure, seeded function of it: fl/runs/build.py), loads its
model.joblib and asks how well two attacks (fl/learning/membership.py) tell
the clients' training rows from rows the model never saw:

- **members**: rows the clients trained on (each partition without the
  share a client holds out to score the global model, as the baselines take
  them: fl/runs/baselines.py ``training_rows``);
- **non-members**: the server's held-out test split;
- the larger set is subsampled (seeded) to the size of the smaller, so both
  weigh the same; the counts are reported.
- **reference models** for the calibrated attack: K models of the run's kind,
  each trained from scratch (as the centralized baseline is) on a random
  half of the *reference pool*, every row of the run's data that is not
  audited (members and non-members left out by the subsampling, the clients'
  own held-out rows, stacking's validation rows). No reference model has
  seen an audited row, so they are all "OUT" models of the offline attack.

The report (audit.json, and the ROC points in audit_roc.csv) has each
attack's AUC and its true-positive rate at 1 % and 0.1 % false positives,
the same per client (its members against all the non-members: which site is
most exposed), the run's ε when it used differential privacy, and the plain
statement that an audit is a lower bound on leakage, not a proof of privacy.

A run whose rows are not on this machine cannot be audited from here (a
hosted coordinator without data, or sites with their own CSV files): AuditError
says so in one sentence, as it does for a directory that is not a finished run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fl.errors import FLError
from fl.data import FederatedData, apply_standardization, local_holdout
from fl.federation.task import client_seed
from fl.learning import membership as M
from fl.learning.metrics import aligned_proba
from fl.learning.models import get_model
from fl.learning.training import LocalModel
from fl.runs.baselines import training_rows
from fl.runs.build import client_ids_for, load_data
from fl.runs.config import ConfigError, RunConfig
from fl.runs.files import write_atomically, write_json_atomically

AUDIT_FILE = "audit.json"
ROC_FILE = "audit_roc.csv"
N_REFERENCES = 4
MIN_POOL = 10  # fewer unaudited rows than this: no reference models, no calibrated attack
# Bounds that keep an audit to seconds on big data: 10,000 rows a side measure an AUC to about ±0.008 and a TPR
# at 0.1 % FPR over 10 false positives; references fit on halves of at most 40,000 rows; AUCs of at most 1,000
# clients (those with the most audited members; the count of the others is reported).
MAX_AUDITED = 10_000
MAX_POOL = 40_000
MAX_CLIENTS = 1_000
ATTACKS = {"loss": "loss threshold (Yeom et al. 2018)",
           "calibrated": "calibrated, offline LiRA (Carlini et al. 2022)"}
LOWER_BOUND = ("An audit is a lower bound on leakage, not a proof of privacy: these two attacks found this much; "
               "a stronger attack, or one that sees the clients' updates rather than the final model, may find more.")
AUDIT_SEED = 0x5EED_A0D17  # the audit's own randomness, apart from the run's


class AuditError(FLError):
    """A run that cannot be audited; str(e) is one sentence saying why."""


@dataclass
class AuditRows:
    """Who is audited: members (with their client), non-members, and the rows reference models may train on."""

    X_members: np.ndarray
    y_members: np.ndarray
    member_client: np.ndarray  # the client id of each member row
    X_nonmembers: np.ndarray
    y_nonmembers: np.ndarray
    X_pool: np.ndarray
    y_pool: np.ndarray
    members_total: int
    nonmembers_total: int


# ---------------------------------------------------------------------- reading a run directory
def open_run(directory: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """The run's settings and summary; AuditError when the directory is not a run, or its rows are not here."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AuditError(f"{directory} is not a run directory (no such directory)")
    try:
        config = RunConfig.from_json((directory / "config.json").read_text())
    except FileNotFoundError:
        raise AuditError(f"{directory} is not a run directory (it has no config.json)") from None
    except (OSError, ValueError, ConfigError) as exc:
        raise AuditError(f"cannot read {directory / 'config.json'}: {exc}") from None
    try:
        summary = json.loads((directory / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        summary = {}
    if config.dataset == "csv" and not config.csv_path:
        raise AuditError(f"the run in {directory} had no data on its server (each site kept its own CSV), so it "
                         "cannot be audited from here: the rows the model was trained on are only at the sites")
    if summary.get("kind") == "hosted" and config.dataset == "csv" and config.partition != "column":
        raise AuditError(f"the sites of the hosted run in {directory} trained on their own CSV files, which this "
                         "machine does not have, so it cannot be audited from here")
    return config, summary


def load_model(directory: str | Path) -> Any:
    """model.joblib: the run's own file in its own directory (never one that came from the network)."""
    import joblib

    path = Path(directory) / "model.joblib"
    if not path.exists():
        raise AuditError(f"the run in {directory} has no final model (model.joblib): it finished no round, or "
                         "it is still running")
    try:
        return joblib.load(path)
    except Exception as exc:  # a truncated or foreign file: say so, never a traceback
        raise AuditError(f"cannot load {path}: {exc}") from None


def read_audit(directory: str | Path) -> dict[str, Any] | None:
    """audit.json when the run has one (an audit is computed once), else None."""
    try:
        return json.loads((Path(directory) / AUDIT_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_epsilon(summary: dict[str, Any]) -> float | None:
    """The ε the run spent (math.inf with noise multiplier 0), None without differential privacy."""
    value = summary.get("epsilon")
    if value in (None, ""):
        return None
    try:
        return float(value)  # "inf" reads as math.inf
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------- rows
def audit_rows(config: RunConfig, data: FederatedData, client_ids: list[str], seed: int) -> AuditRows:
    """Members and non-members, the larger subsampled to the smaller's size (seeded), and the pool left over."""
    rng = np.random.default_rng([seed, AUDIT_SEED])
    member_X, member_y, member_c, held_X, held_y = [], [], [], [], []
    for i, cid in enumerate(client_ids):
        X, y = training_rows(config, data, i, cid)
        member_X.append(X)
        member_y.append(y)
        member_c.append(np.full(len(y), cid, dtype=object))
        Xi, yi = data.client_data(i)
        _, held = local_holdout(len(yi), config.local_test_size, client_seed(config.seed, cid))
        held_X.append(Xi[held])
        held_y.append(yi[held])
    X_in, y_in = np.vstack(member_X), np.concatenate(member_y)
    c_in = np.concatenate(member_c)
    X_out, y_out = data.split.X_test, data.split.y_test
    if len(y_in) == 0 or len(y_out) == 0:
        raise AuditError("the run has no training rows or no held-out rows to tell apart")
    n = min(len(y_in), len(y_out), MAX_AUDITED)
    keep_in = np.sort(rng.choice(len(y_in), n, replace=False))
    keep_out = np.sort(rng.choice(len(y_out), n, replace=False))
    rest_in = np.setdiff1d(np.arange(len(y_in)), keep_in)
    rest_out = np.setdiff1d(np.arange(len(y_out)), keep_out)
    free_X, free_y = _unassigned(data)
    pool_X = [X_in[rest_in], X_out[rest_out], *held_X, free_X]
    pool_y = [y_in[rest_in], y_out[rest_out], *held_y, free_y]
    if data.split.X_val is not None and len(data.split.X_val):
        pool_X.append(data.split.X_val)
        pool_y.append(data.split.y_val)
    X_pool, y_pool = np.vstack(pool_X), np.concatenate(pool_y)
    if len(y_pool) > MAX_POOL:
        keep = np.sort(rng.choice(len(y_pool), MAX_POOL, replace=False))
        X_pool, y_pool = X_pool[keep], y_pool[keep]
    return AuditRows(X_in[keep_in], y_in[keep_in], c_in[keep_in], X_out[keep_out], y_out[keep_out],
                     X_pool, y_pool, len(y_in), len(y_out))


def _unassigned(data: FederatedData) -> tuple[np.ndarray, np.ndarray]:
    """Training-pool rows that no client holds (a partition may leave some out): nobody trained on them."""
    taken = np.concatenate(data.parts) if data.parts else np.empty(0, dtype=np.int64)
    free = np.setdiff1d(np.arange(len(data.split.y_train)), taken)
    return data.split.X_train[free], data.split.y_train[free]


# ---------------------------------------------------------------------- models
def target_confidences(model: Any, X: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """Per-row loss and logit confidence of the run's model on raw rows (its pipeline scales them itself)."""
    estimator = model
    if hasattr(model, "steps"):  # Pipeline([("standardize", scaler), ("model", estimator)])
        X = model[:-1].transform(X)
        estimator = model[-1]
    proba = aligned_proba(estimator, X, classes)
    index = np.searchsorted(classes, y)
    return M.row_losses(proba, index), M.logit_confidence(proba, index)


def reference_confidences(config: RunConfig, rows: AuditRows, classes: np.ndarray, stats: dict | None,
                          n_models: int, seed: int,
                          should_stop: Callable[[], bool] = lambda: False) -> tuple[np.ndarray, int]:
    """Logit confidences (K, n audited rows) of K models of the run's kind, each fit from scratch on a random
    half of the pool; and the rows each saw (the smallest). Models that fail to fit are left out."""
    rng = np.random.default_rng([seed, AUDIT_SEED, 1])
    X_audit = apply_standardization(np.vstack([rows.X_members, rows.X_nonmembers]), stats)
    index = np.searchsorted(classes, np.concatenate([rows.y_members, rows.y_nonmembers]))
    X_pool = apply_standardization(rows.X_pool, stats)
    params = get_model(config.model).whole_params(config.model_params, config.effective_rounds)
    out, sizes = [], []
    for k in range(n_models):
        if should_stop():
            break
        half = rng.random(len(rows.y_pool)) < 0.5
        try:
            fitted = LocalModel(config.model, params, classes, X_pool.shape[1], seed=config.seed + 1 + k)
            estimator = fitted.fit(X_pool[half], rows.y_pool[half], whole_model=True).estimator_
        except Exception:  # a half the model cannot fit (one class for a model that needs two): one fewer
            continue
        out.append(M.logit_confidence(aligned_proba(estimator, X_audit, classes), index))
        sizes.append(int(half.sum()))
    return (np.vstack(out) if out else np.empty((0, len(index)))), (min(sizes) if sizes else 0)


# ---------------------------------------------------------------------- the audit
def audit_data(config: RunConfig, model: Any, data: FederatedData, client_ids: list[str], *,
               n_references: int = N_REFERENCES, seed: int | None = None) -> dict[str, Any]:
    """The audit of ``model`` trained by the run ``config`` describes on ``data``: a JSON-ready report."""
    started = time.monotonic()
    seed = config.seed if seed is None else seed
    classes = np.asarray(data.dataset.classes)
    stats = data.stats if config.standardize else None
    rows = audit_rows(config, data, client_ids, seed)
    n = len(rows.y_members)
    is_member = np.r_[np.ones(n, dtype=bool), np.zeros(len(rows.y_nonmembers), dtype=bool)]
    losses, confidence = target_confidences(model, np.vstack([rows.X_members, rows.X_nonmembers]),
                                            np.concatenate([rows.y_members, rows.y_nonmembers]), classes)
    scores = {"loss": M.loss_threshold_scores(losses)}
    reasons: dict[str, str] = {}
    references, rows_each = np.empty((0, len(is_member))), 0
    if len(rows.y_pool) < MIN_POOL:
        reasons["calibrated"] = (f"only {len(rows.y_pool)} rows are left to train reference models on (every "
                                 "other row is audited)")
    else:
        references, rows_each = reference_confidences(config, rows, classes, stats, n_references, seed)
        if len(references) < 2:
            reasons["calibrated"] = (f"only {len(references)} of {n_references} reference models could be trained "
                                     f"on halves of the {len(rows.y_pool)} unaudited rows")
        else:
            scores["calibrated"] = M.lira_offline_scores(confidence, references)
    attacks: dict[str, Any] = {}
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for name, label in ATTACKS.items():
        if name not in scores:
            attacks[name] = {"label": label, "auc": None, "tpr_at_fpr": None, "reason": reasons.get(name)}
            continue
        result = M.attack_result(scores[name], is_member)
        curves[name] = M.thin_roc(result.pop("fpr"), result.pop("tpr"))
        attacks[name] = {"label": label, **{k: result[k] for k in ("auc", "tpr_at_fpr")}}
    return {
        "model": config.model, "aggregation": config.aggregation, "dp": config.dp,
        "noise_multiplier": config.noise_multiplier if config.dp != "none" else None,
        "dp_delta": config.dp_delta if config.dp != "none" else None,
        "members": {"n": n, "of": rows.members_total, "from": "the clients' training rows"},
        "nonmembers": {"n": len(rows.y_nonmembers), "of": rows.nonmembers_total,
                       "from": "the server's held-out test split"},
        "references": {"n_models": int(len(references)), "rows_each": rows_each, "pool": int(len(rows.y_pool)),
                       "from": "random halves of the rows not audited (no audited row in any)"},
        "attacks": attacks,
        "per_client": per_client(scores, rows.member_client, n),
        "clients_with_members": int(len(set(rows.member_client.tolist()))),
        "roc": {name: {"fpr": fpr, "tpr": tpr} for name, (fpr, tpr) in curves.items()},
        "fpr_targets": list(M.FPR_TARGETS),
        "chance_sd": M.chance_sd(n, len(rows.y_nonmembers)),
        "lower_bound": LOWER_BOUND,
        "seconds": round(time.monotonic() - started, 2),
    }


def per_client(scores: dict[str, np.ndarray], member_client: np.ndarray, n_members: int) -> dict[str, Any]:
    """Each client's audited members against all the non-members: its AUC under each attack (and the chance
    spread with its few members: a small client's AUC is noisy)."""
    out: dict[str, Any] = {}
    names = member_client.astype(str)
    ids, counts = np.unique(names, return_counts=True)
    for cid in sorted(ids[np.argsort(-counts, kind="stable")[:MAX_CLIENTS]].tolist()):
        mine = np.flatnonzero(names == cid)
        chosen = np.r_[mine, np.arange(n_members, len(next(iter(scores.values()))))]
        is_member = np.r_[np.ones(len(mine), dtype=bool), np.zeros(len(chosen) - len(mine), dtype=bool)]
        out[cid] = {"n_members": int(len(mine)), "chance_sd": M.chance_sd(len(mine), len(chosen) - len(mine)),
                    **{name: M.auc(s[chosen], is_member) for name, s in scores.items()}}
    return out


def run_audit(directory: str | Path, *, n_references: int = N_REFERENCES, save: bool = True) -> dict[str, Any]:
    """Audit the run in ``directory``; writes audit.json and audit_roc.csv there (``save``). AuditError says
    in one sentence why a directory cannot be audited."""
    directory = Path(directory)
    config, summary = open_run(directory)
    model = load_model(directory)
    try:
        data = load_data(config)
    except (FLError, OSError) as exc:
        raise AuditError(f"cannot rebuild the run's data from {directory / 'config.json'}: {exc}") from None
    report = audit_data(config, model, data, client_ids_for(data), n_references=n_references)
    report.update(run_id=summary.get("run_id") or directory.name, created_at=time.time(),
                  epsilon=_json_epsilon(run_epsilon(summary)), run_kind=summary.get("kind") or "simulation")
    if report["run_kind"] == "hosted":
        report["note"] = ("a hosted run: its sites are taken to have trained on the partitions of the server's "
                          "copy of the data (the Deploy page's commands); sites with other rows were not audited")
    if save:
        write_json_atomically(directory / AUDIT_FILE, report)
        write_atomically(directory / ROC_FILE, roc_csv(report))
    return report


def _json_epsilon(value: float | None) -> float | str | None:
    return "inf" if value == math.inf else value


def roc_csv(report: dict[str, Any]) -> str:
    """attack, fpr, tpr: the ROC points of each attack (thinned beyond the first low-FPR points)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["attack", "fpr", "tpr"])
    for name, curve in (report.get("roc") or {}).items():
        writer.writerows([name, f, t] for f, t in zip(curve["fpr"], curve["tpr"]))
    return buf.getvalue()
