"""The Run page's Privacy section: a membership-inference audit of the finished run's model, on request.

The audit (fl/runs/audit.py) takes seconds (it trains a few reference
models), so it runs when the button is pressed, in the page's own script,
and writes audit.json into the run's directory; a run that has one shows it
at once, without computing it again. An audit that cannot run says why in
one sentence (st.error), never with a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from fl.runs.audit import AuditError, read_audit, run_audit
from ui import privacy_charts
from ui.format import epsilon_shown, num, pct, words

WHAT = ("Can an attacker who queries the final global model tell the clients' training rows from rows it never "
        "saw? Two membership-inference attacks answer: the loss threshold (a training row has a low loss) and a "
        "calibrated one (LiRA, offline: 4 reference models trained without the audited rows say how confident a "
        "model is on each row anyway). AUC 0.5: they cannot tell.")


def audit_metrics(report: dict[str, Any]) -> None:
    """The attacks' AUCs, the calibrated attack's TPR at low FPRs, and ε when the run used DP."""
    attacks = report["attacks"]
    best = attacks["calibrated"] if attacks.get("calibrated", {}).get("auc") is not None else attacks["loss"]
    tpr = best.get("tpr_at_fpr") or {}
    cols = st.columns(5 if report.get("dp") not in (None, "none") else 4)
    cols[0].metric("AUC, loss threshold", num(attacks["loss"].get("auc")),
                   help="Yeom et al. 2018: members have lower losses. 0.5: cannot tell; 1: tells every row.")
    cols[1].metric("AUC, calibrated", num(attacks.get("calibrated", {}).get("auc")),
                   help=attacks.get("calibrated", {}).get("reason") or
                   "Carlini et al. 2022, offline LiRA: the model's confidence on a row against reference models "
                   "that never saw it.")
    cols[2].metric("TPR at 1 % FPR", pct(tpr.get("0.01")),
                   help="Members found when only 1 % of the non-members are wrongly called members "
                        f"({best['label']}).")
    cols[3].metric("TPR at 0.1 % FPR", pct(tpr.get("0.001")),
                   help=f"The same at 0.1 % ({best['label']}); with fewer than 1,000 non-members, at no false "
                        "positive at all.")
    if len(cols) == 5:
        epsilon = report.get("epsilon")
        cols[4].metric("Privacy ε", epsilon_shown(float(epsilon)) if epsilon is not None else "–",
                       help=f"What the run's differential privacy guarantees (δ = {report.get('dp_delta')}).")


def show_report(report: dict[str, Any], key: str) -> None:
    """An audit's numbers, its ROC and per-client charts, the counts, and what an audit cannot say."""
    audit_metrics(report)
    members, non, refs = report["members"], report["nonmembers"], report["references"]
    st.caption(f"{members['n']} of the clients' {members['of']} training rows against {non['n']} of the server's "
               f"{non['of']} held-out rows (equal counts, sampled); {refs['n_models']} reference models, each "
               f"trained on about {refs['rows_each']} of the {refs['pool']} rows not audited. An attack that "
               f"cannot tell scores 0.5 ± {2 * report['chance_sd']:.3f} with these counts (two standard "
               "deviations); a client's own AUC, over its fewer members, is noisier (hover a bar).")
    left, right = st.columns(2)
    left.plotly_chart(privacy_charts.roc_figure(report), key=f"{key}-audit-roc")
    if len(report.get("per_client") or {}) > 1:
        right.plotly_chart(privacy_charts.client_auc_figure(report), key=f"{key}-audit-clients")
    for attack in report["attacks"].values():
        if attack.get("reason"):
            st.caption(f"{attack['label']}: not computed, {words(attack['reason'])}.")
    if report.get("note"):
        st.caption(f"Note: {words(report['note'])}.")
    st.info(report["lower_bound"], icon=":material/search:")


def privacy_block(run_dir: Path | None, has_model: bool, key: str) -> None:
    """The Privacy expander of a finished run: the audit if it has one, else a button that computes it."""
    report = read_audit(run_dir) if run_dir is not None else None
    with st.expander("Privacy: membership inference audit", expanded=report is not None):
        st.caption(WHAT)
        if report is None:
            if run_dir is None or not has_model:
                st.caption("This run has no final model on disk to audit.")
                return
            if not st.button("Run privacy audit", key=f"{key}-run-audit",
                             help="Takes seconds: rebuilds the run's data and trains 4 reference models."):
                return
            try:
                with st.spinner("Auditing: scoring every audited row, training the reference models…"):
                    report = run_audit(run_dir)
            except AuditError as exc:
                st.error(f"Cannot audit this run: {words(exc)}.")
                return
            except Exception as exc:  # a model the attacks cannot score: said, never a traceback
                st.error(f"The audit failed: {words(f'{type(exc).__name__}: {exc}')}.")
                return
        show_report(report, key)
