"""The privacy audit: membership-inference math, audits of real runs, ``python -m fl audit`` and its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fl.learning import membership as M
from fl.runs import simulation
from fl.runs.audit import AUDIT_FILE, LOWER_BOUND, ROC_FILE, read_audit, run_audit
from fl.cli.main import build_parser, main
from fl.runs.config import RunConfig
from fl.runs.sweep_spec import SweepSpec, make_sweep
from fl.runs.sweep_run import audit_run
from fl.runs.sweep_stats import cells_frame, run_outcome, summary_frame
from tests.test_cli import ENV, ROOT

# Few rows per client and a model that memorises them: 2 clients of ~64 training rows, 20 features
OVERFIT = dict(dataset="synthetic", n_samples=200, n_features=20, clients=2, partition="iid", workers=0)
FOREST = dict(OVERFIT, model="random_forest", model_params={"n_estimators": 25}, aggregation="voting")
MLP = dict(OVERFIT, n_features=40, model="mlp", rounds=10, local_epochs=10)


def simulate_into(directory, **settings) -> None:
    """A finished simulated run in ``directory`` (its config, summary and model.joblib)."""
    result = simulation.run(RunConfig(**settings), out_dir=str(directory))
    assert result.status == "completed"


# ---------------------------------------------------------------------- the math
def test_members_with_lower_losses_are_told_apart_and_identical_distributions_are_not():
    # Prepare: members' losses drawn lower than non-members', then both from one distribution
    rng = np.random.default_rng(0)
    apart = np.r_[rng.exponential(0.2, 2000), rng.exponential(1.0, 2000)]
    alike = rng.exponential(1.0, 4000)
    is_member = np.r_[np.ones(2000, bool), np.zeros(2000, bool)]
    # Execute
    told = M.attack_result(M.loss_threshold_scores(apart), is_member)
    blind = M.attack_result(M.loss_threshold_scores(alike), is_member)
    shuffled = M.attack_result(M.loss_threshold_scores(apart), rng.permutation(is_member))
    # Assert
    assert told["auc"] > 0.75
    assert abs(blind["auc"] - 0.5) < 3 * blind["chance_sd"]
    assert abs(shuffled["auc"] - 0.5) < 3 * shuffled["chance_sd"]  # random membership labels
    assert told["tpr_at_fpr"]["0.01"] > blind["tpr_at_fpr"]["0.01"]


def test_tpr_at_fpr_is_the_best_step_at_or_below_the_rate_by_hand():
    # Prepare: 3 members, 4 non-members; descending scores m m n m n n n
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    is_member = np.array([True, True, False, True, False, False, False])
    # Execute
    result = M.attack_result(scores, is_member, fpr_targets=(0.0, 0.25, 0.3, 0.5))
    # Assert: no false positive -> 2 of 3 members; one of 4 (25 %) -> all 3; AUC = 11 of 12 pairs ordered
    assert result["tpr_at_fpr"] == {"0": pytest.approx(2 / 3), "0.25": 1.0, "0.3": 1.0, "0.5": 1.0}
    assert result["auc"] == pytest.approx(11 / 12)
    assert M.tpr_at_fpr(np.array([0.0, 0.5, 1.0]), np.array([0.2, 0.6, 1.0]), 0.49) == 0.2


def test_losses_and_logit_confidences_of_probabilities():
    # Prepare
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [1.0, 0.0]])
    y_index = np.array([0, 0, 0])
    # Execute
    losses = M.row_losses(proba, y_index)
    confidence = M.logit_confidence(proba, y_index)
    # Assert: -log p; log p/(1-p), finite at p = 1 (clipped like the log loss)
    np.testing.assert_allclose(losses[:2], [-np.log(0.9), -np.log(0.2)])
    np.testing.assert_allclose(confidence[:2], [np.log(9), np.log(0.25)])
    assert np.isfinite(confidence[2]) and confidence[2] > 30


def test_the_calibrated_attack_sees_through_rows_that_are_easy_for_every_model():
    # Prepare: rows of very different difficulty; membership adds a little confidence on top of it
    rng = np.random.default_rng(1)
    n = 1000
    difficulty = rng.normal(0, 3, 2 * n)
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    target = difficulty + 1.0 * is_member + rng.normal(0, 0.3, 2 * n)
    references = difficulty + rng.normal(0, 0.3, (4, 2 * n))  # OUT models: the difficulty, without the member bump
    # Execute
    plain = M.attack_result(target, is_member)  # the loss attack ranks by confidence alone
    calibrated = M.attack_result(M.lira_offline_scores(target, references), is_member)
    # Assert
    assert plain["auc"] < 0.65 < 0.9 < calibrated["auc"]
    assert calibrated["tpr_at_fpr"]["0.01"] > 5 * plain["tpr_at_fpr"]["0.01"]
    with pytest.raises(ValueError, match="at least 2 reference models"):
        M.lira_offline_scores(target, references[:1])


# ---------------------------------------------------------------------- audits of real runs
@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """An MLP overfit on few rows per client, federated by FedAvg, audited once."""
    directory = tmp_path_factory.mktemp("mlp")
    simulate_into(directory, **MLP)
    return directory, run_audit(directory)


def test_an_overfit_forest_on_few_rows_per_client_leaks_membership(tmp_path):
    # Prepare
    simulate_into(tmp_path, **FOREST)
    # Execute
    report = run_audit(tmp_path)
    # Assert: both attacks well above 0.5, the counts balanced, every audited client reported
    assert report["attacks"]["loss"]["auc"] > 0.65
    assert report["attacks"]["calibrated"]["auc"] > 0.65
    assert report["members"]["n"] == report["nonmembers"]["n"] == 40
    assert report["references"]["n_models"] == 4 and report["references"]["pool"] > 0
    assert set(report["per_client"]) == {"client_000", "client_001"}
    assert sum(c["n_members"] for c in report["per_client"].values()) == 40


def test_an_overfit_mlp_leaks_and_its_audit_is_written_beside_the_run(mlp_run):
    # Prepare
    directory, report = mlp_run
    # Execute
    saved = read_audit(directory)
    roc = pd.read_csv(directory / ROC_FILE)
    # Assert
    assert report["attacks"]["loss"]["auc"] > 0.65 and report["attacks"]["calibrated"]["auc"] > 0.65
    assert saved["attacks"] == json.loads(json.dumps(report["attacks"]))
    assert saved["lower_bound"] == LOWER_BOUND and saved["epsilon"] is None and saved["dp"] == "none"
    assert set(roc["attack"]) == {"loss", "calibrated"} and roc["fpr"].between(0, 1).all()


def test_differential_privacy_brings_the_audit_toward_one_half(mlp_run, tmp_path):
    # Prepare: the same MLP with client-side clipping and noise multiplier 2
    _, open_report = mlp_run
    simulate_into(tmp_path, **MLP, dp="client", noise_multiplier=2.0)
    # Execute
    private = run_audit(tmp_path)
    # Assert
    assert private["epsilon"] == pytest.approx(8.08, abs=0.01) and private["dp"] == "client"
    for attack in ("loss", "calibrated"):
        assert private["attacks"][attack]["auc"] < open_report["attacks"][attack]["auc"] - 0.1
        assert abs(private["attacks"][attack]["auc"] - 0.5) < 0.15


def test_random_labels_leave_nothing_for_a_small_model_to_memorise(tmp_path):
    # Prepare: a CSV of random features and random labels; logistic regression cannot memorise 1,600 rows
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(2000, 5)), columns=[f"x{i}" for i in range(5)])
    frame["label"] = rng.integers(0, 2, 2000)
    frame.to_csv(tmp_path / "random.csv", index=False)
    simulate_into(tmp_path / "run", dataset="csv", csv_path=str(tmp_path / "random.csv"), target="label",
                  clients=2, partition="iid", model="logreg", rounds=5, workers=0)
    # Execute
    report = run_audit(tmp_path / "run")
    # Assert: both attacks within 3 chance standard deviations of 0.5
    for attack in ("loss", "calibrated"):
        assert abs(report["attacks"][attack]["auc"] - 0.5) < 3 * report["chance_sd"]


# ---------------------------------------------------------------------- the command line
def test_python_m_fl_audit_prints_the_table_and_the_lower_bound(mlp_run):
    # Prepare
    directory, _ = mlp_run
    # Execute
    proc = subprocess.run([sys.executable, "-m", "fl", "audit", str(directory)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    # Assert
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "attack" in out and "AUC     TPR@1%FPR  TPR@0.1%FPR" in out
    assert "loss threshold (Yeom et al. 2018)" in out and "calibrated, offline LiRA" in out
    assert "per client" in out and "client_000" in out and "client_001" in out
    assert "differential privacy: none" in out
    assert "An audit is a lower bound on leakage, not a proof of privacy" in out
    assert f"written: {directory / AUDIT_FILE}" in proc.stderr


def test_the_command_line_says_epsilon_of_a_private_run(tmp_path, capsys):
    # Prepare
    simulate_into(tmp_path, **OVERFIT, model="logreg", rounds=3, dp="server", noise_multiplier=1.0)
    # Execute
    code = main(["audit", str(tmp_path), "--references", "2"])
    # Assert
    out = capsys.readouterr().out
    assert code == 0
    assert "differential privacy: server-side clipping, noise multiplier 1: epsilon " in out
    assert "at delta 1e-05 (client level)" in out


def test_runs_that_cannot_be_audited_are_one_line_and_exit_2(mlp_run, tmp_path, capsys):
    # Prepare: no directory, no config, no model, a coordinator without data, an unreadable model
    directory, _ = mlp_run
    no_model = tmp_path / "no_model"
    shutil.copytree(directory, no_model)
    (no_model / "model.joblib").unlink()
    hosted = tmp_path / "hosted"
    hosted.mkdir()
    (hosted / "config.json").write_text(RunConfig(dataset="csv", target="species").to_json())
    (hosted / "summary.json").write_text(json.dumps({"kind": "hosted", "status": "completed"}))
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    (broken / "model.joblib").write_bytes(b"not a model")
    cases = {tmp_path / "nowhere": "is not a run directory (no such directory)",
             tmp_path: "is not a run directory (it has no config.json)",
             no_model: "has no final model (model.joblib)",
             hosted: "had no data on its server (each site kept its own CSV), so it cannot be audited from here",
             broken: "cannot load"}
    for path, needle in cases.items():
        # Execute
        code = main(["audit", str(path)])
        # Assert
        err = capsys.readouterr().err
        assert code == 2, path
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_audit_is_a_subcommand_of_python_m_fl(capsys):
    # Execute
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    # Assert
    assert "{simulate,server,client,certs,sweep,audit,runs}" in capsys.readouterr().out


# ---------------------------------------------------------------------- sweeps
def test_a_sweep_can_audit_its_runs_and_keeps_the_aucs_and_epsilon(mlp_run, tmp_path):
    # Prepare
    directory, report = mlp_run
    spec = make_sweep(RunConfig(**MLP), {"noise_multiplier": [0.5, 1.0]}, seeds=1, audit=True)
    rows = [{"cell": 0, "cell_values": {"noise_multiplier": 0.5}, "seed": 0, "run_id": "a", "status": "completed",
             **run_outcome([{"accuracy": 0.8, "epsilon": float("inf")}]), **audit_run(directory)},
            {"cell": 1, "cell_values": {"noise_multiplier": 1.0}, "seed": 0, "run_id": "b", "status": "completed",
             **run_outcome([{"accuracy": 0.7, "epsilon": 19.05}]), **audit_run(tmp_path)}]
    # Execute
    summary = summary_frame(rows, ["noise_multiplier"], audit=True)
    cells = cells_frame(rows, spec.cells(), ["noise_multiplier"], audit=True)
    # Assert
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec and spec.audit
    assert list(summary["epsilon"]) == [float("inf"), 19.05]
    assert summary["audit_auc"][0] == pytest.approx(report["attacks"]["loss"]["auc"])
    assert np.isnan(summary["audit_auc"][1]) and "is not a run directory" in rows[1]["audit_error"]
    assert cells["audit_auc_calibrated_mean"][0] == pytest.approx(report["attacks"]["calibrated"]["auc"])
    assert "audit_auc" not in summary_frame(rows, ["noise_multiplier"])  # a sweep without the audit


def test_the_sweep_command_line_takes_audit_and_says_each_runs_auc_and_epsilon():
    from fl.cli.sweep import progress_line, spec_from_args

    # Prepare
    argv = ["sweep", "--dataset", "iris", "--model", "logreg", "--dp", "client", "--grid",
            "noise_multiplier=0,1", "--seeds", "1"]
    row = {"cell_values": {"noise_multiplier": 0.0}, "seed": 0, "status": "completed", "final_accuracy": 0.9,
           "best_accuracy": 0.95, "rounds_done": 3, "duration_s": 1.0, "epsilon": float("inf"), "audit_auc": 0.61,
           "audit_auc_calibrated": 0.72}
    # Execute
    audited = spec_from_args(build_parser().parse_args([*argv, "--audit"]))
    plain = spec_from_args(build_parser().parse_args(argv))
    line = progress_line(row, 1, 2)
    # Assert
    assert audited.audit and not plain.audit
    assert line.endswith("epsilon inf (no noise: no privacy)  audit AUC 0.6100 (calibrated 0.7200)")


# ---------------------------------------------------------------------- the Run page
def test_the_run_pages_privacy_section_audits_on_request_and_shows_a_saved_audit(app_env):
    from tests.apptest_helpers import new_app, new_app_with_url, run_until, texts

    # Prepare: a small finished run on the Run page
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("iris").run()
    at.sidebar.selectbox(key="cfg_model").set_value("logreg").run()
    at.sidebar.slider(key="cfg_clients").set_value(3).run()
    at.sidebar.slider(key="cfg_rounds").set_value(2).run()
    at.sidebar.button(key="start_run").click().run()
    at = run_until(at, lambda a: len(a.success) > 0)
    run_id = at.query_params["run"]
    assert not any(m.label.startswith("AUC") for m in at.metric)  # not computed until asked
    charts = len(at.get("plotly_chart"))
    # Execute
    at.button(key=f"static-{run_id}-run-audit").click().run()
    reload = new_app_with_url(run=run_id)
    # Assert: the numbers, both charts, the lower bound; saved, and shown again without the button
    assert not at.exception and not at.error
    assert {"AUC, loss threshold", "AUC, calibrated", "TPR at 1 % FPR", "TPR at 0.1 % FPR"} <= {
        m.label for m in at.metric}
    assert any(e.label.startswith("Privacy") for e in at.expander)
    assert "not a proof of privacy" in texts(at.info)
    assert len(at.get("plotly_chart")) == charts + 2  # the ROC and the per-client AUCs
    assert (app_env / run_id / AUDIT_FILE).exists()
    assert not reload.exception and "AUC, calibrated" in {m.label for m in reload.metric}
    assert not [b for b in reload.button if b.label == "Run privacy audit"]


def test_the_audit_charts_draw_a_report_and_a_sweeps_auc_against_epsilon(mlp_run):
    from ui import privacy_charts

    # Prepare
    _, report = mlp_run
    summary = pd.DataFrame({"status": ["completed"] * 5, "epsilon": [float("inf"), 48.8, 48.8, 8.08, None],
                            "audit_auc": [0.70, 0.60, 0.62, 0.52, 0.71],
                            "audit_auc_calibrated": [0.80, 0.66, 0.64, 0.55, 0.82]})
    # Execute
    roc = privacy_charts.roc_figure(report)
    clients = privacy_charts.client_auc_figure(report)
    versus = privacy_charts.auc_vs_epsilon_figure(summary)
    # Assert: the diagonal and one curve per attack; a bar per client per attack; per attack the runs with a
    # finite ε as points and their means as a line, the others (no DP, ε = ∞) as a dashed level
    assert [t.name.split(" (")[0] for t in roc.data] == ["cannot tell", "Loss threshold", "Calibrated"]
    assert [sorted(t.x) for t in clients.data] == [["client_000", "client_001"]] * 2
    assert [len(t.x) for t in versus.data] == [3, 2, 3, 2]
    assert list(versus.data[1].y) == pytest.approx([0.52, 0.61])  # mean per ε, ε ascending
    levels = [s.y0 for s in versus.layout.shapes]
    assert pytest.approx(0.705) in levels and pytest.approx(0.81) in levels and 0.5 in levels
    assert privacy_charts.has_audit(summary) and not privacy_charts.has_audit(summary.drop(
        columns=["audit_auc", "audit_auc_calibrated"]))
