"""Cross-silo runs: one CSV per site, a coordinator without a single row (issue 13).

The server builds its task from the sites' data summaries (counts and sums,
never rows; docs/protocol.md "Data summaries"): the feature columns, the
one-hot category sets (the union of the sites'), the global scaler and the
label set (a site may hold one class). The done-when test compares the
federated model with the same model trained centrally on the pooled rows.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from fl.data import apply_standardization, features_from_frame, load_client_frame, local_holdout
from fl.data.site_summary import columns_problem, merge_summaries, summarize_data
from fl.federation.client import FederatedClient
from fl.federation.server import ServerSettings
from fl.federation.task import client_seed
from fl.runs import hosting
from fl.runs.config import RunConfig
from fl.wire import Error, Hello, ProtocolError, Summary, decode_frame, frame_to_bytes, parse_message
from fl.wire.reference_peer import Connection
from tests.site_helpers import run_sites, site_client as shared_site_client

TARGET = "diagnosis"
ROOT = Path(__file__).resolve().parent.parent


def make_sites(directory: Path) -> list[Path]:
    """Three sites of breast_cancer: two mixed ones with clinics north/south, a third benign-only one whose
    clinic 'east' no other site has (60 rows, so it is named in its summary)."""
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": TARGET})
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    benign, malignant = frame[frame[TARGET] == 1], frame[frame[TARGET] == 0]
    rest = pd.concat([benign.iloc[60:], malignant]).sample(frac=1.0, random_state=1).reset_index(drop=True)
    sites = [rest.iloc[:280].copy(), rest.iloc[280:].copy(), benign.iloc[:60].copy()]
    rng = np.random.default_rng(0)
    for site in sites[:2]:
        site["clinic"] = rng.choice(["north", "south"], len(site))
    sites[2]["clinic"] = "east"
    paths = []
    for i, site in enumerate(sites, 1):
        site[TARGET] = site[TARGET].map({0: "malignant", 1: "benign"})
        path = directory / f"site{i}.csv"
        site.to_csv(path, index=False)
        paths.append(path)
    return paths


def site_client(path: Path, cid: str, port: int) -> FederatedClient:
    return shared_site_client(path, cid, port, TARGET)


@pytest.fixture
def sites(tmp_path: Path) -> list[Path]:
    return make_sites(tmp_path)


def test_three_sites_without_server_data_match_a_centralized_model(sites: list[Path], tmp_path: Path) -> None:
    config = RunConfig(dataset="csv", target=TARGET, model="logreg", rounds=5, min_clients=3, clients=3)
    handle = hosting.host(config, ServerSettings(port=0, wait_for_clients=3, join_timeout_s=30),
                          out_dir=str(tmp_path / "run"), data_at_clients=True)
    clients = [site_client(p, f"site{i}", handle.server.address[1]) for i, p in enumerate(sites, 1)]
    threads, results = run_sites(clients)
    try:
        result = handle.wait(90)
    finally:
        handle.stop()
        for t in threads:
            t.join(15)
    assert result is not None and result.status == "completed", result and result.error
    assert len(result.rounds) == 5 and all(r["n_failures"] == 0 for r in result.rounds)
    assert all(r.ok and r.rounds_trained == 5 for r in results.values()), results

    # The category columns align: one task, the unique clinic included, every site built the same columns.
    task = handle.server.task
    assert [n for n in task.feature_names if n.startswith("clinic=")] == ["clinic=east", "clinic=north",
                                                                           "clinic=south"]
    assert all(c.task.feature_names == task.feature_names for c in clients)
    assert task.classes == ["benign", "malignant"]

    # Centralized: the same model (scikit-learn's LogisticRegression, C=1) with the same preprocessing
    # (the task's columns and global scaler) on the pooled training rows of the three sites, scored on the
    # pooled held-out rows, the very rows the sites score the federated model on. The federated accuracy
    # (the sample-weighted mean of the sites' held-out accuracies) is the accuracy on that same pool.
    X_train, y_train, X_test, y_test = [], [], [], []
    for client, path in zip(clients, sites):
        own = load_client_frame(str(path), TARGET)
        X = apply_standardization(features_from_frame(own.frame, task.feature_names), task.standardize)
        train, held = local_holdout(len(own.y), task.local_test_size, client_seed(0, client.client_id))
        X_train.append(X[train]), y_train.append(own.y[train]), X_test.append(X[held]), y_test.append(own.y[held])
    central = LogisticRegression(C=1.0, max_iter=1000).fit(np.vstack(X_train), np.concatenate(y_train))
    central_acc = float(central.score(np.vstack(X_test), np.concatenate(y_test)))
    federated_acc = result.final_metrics["accuracy"]
    print(f"federated {federated_acc:.4f} centralized {central_acc:.4f}")
    assert abs(federated_acc - central_acc) <= 0.03

    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    by_site = {s["client_id"]: s for s in report["sites"]}
    assert by_site["site3"]["n_classes"] == 1 and by_site["site3"]["class_counts"] == {"benign": 60}
    assert [s["rows"] for s in report["sites"]] == [280, 229, 60]
    assert handle.state.snapshot()["clients"]["site3"]["n_classes"] == 1


def test_cli_server_without_data_needs_no_classes_or_features(sites: list[Path], tmp_path: Path) -> None:
    """``python -m fl server --dataset csv --target T`` and three ``client --csv siteK.csv`` processes."""
    server = subprocess.Popen(
        [sys.executable, "-m", "fl", "server", "--dataset", "csv", "--target", TARGET, "--port", "0",
         "--rounds", "2", "--min-clients", "3", "--wait", "60", "--out", str(tmp_path / "run")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients: list[subprocess.Popen] = []
    try:
        line = server.stdout.readline()  # "listening on HOST:PORT" (bounded: the server exits on its own)
        assert line.startswith("listening on"), line + server.stderr.read()
        port = line.strip().rsplit(":", 1)[1]
        clients = [subprocess.Popen([sys.executable, "-m", "fl", "client", "--csv", str(p), "--target", TARGET,
                                     "--port", port, "--client-id", f"site{i}", "--connect-timeout", "20"],
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for i, p in enumerate(sites, 1)]
        out, err = server.communicate(timeout=120)
        assert server.returncode == 0, err
        assert "completed: accuracy" in out
        assert "site3:" in err and "1 class" in err  # the data report, printed once on stderr
        for c in clients:
            c.communicate(timeout=30)
            assert c.returncode == 0
    finally:
        for proc in [server, *clients]:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert (tmp_path / "run" / "data_report.json").exists()


def test_old_client_and_late_client_with_other_columns_are_refused(sites: list[Path], tmp_path: Path) -> None:
    # rounds enough to outlast the late site's arrival on a loaded machine (the run is stopped at the end)
    config = RunConfig(dataset="csv", target=TARGET, model="logreg", rounds=2000, min_clients=2, clients=2,
                       round_timeout=5)
    handle = hosting.host(config, ServerSettings(port=0, wait_for_clients=2, join_timeout_s=30),
                          data_at_clients=True)
    port = handle.server.address[1]
    threads, results = run_sites([site_client(p, f"site{i}", port) for i, p in enumerate(sites[:2], 1)])
    try:
        # A client written before the extension (no hello.features) is told why it cannot take part.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            conn = Connection(sock)
            conn.send(Hello(client_id="old", n_samples=10, n_features=31))
            reply = conn.recv(idle_timeout=5)
        assert isinstance(reply, Error) and reply.code == "summary" and "update the client" in reply.message
        deadline = time.monotonic() + 30
        while not handle.server.task_ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handle.server.task_ready
        # A site joining once the task is built, without two of the task's columns: refused, naming them.
        frame = pd.read_csv(sites[2]).drop(columns=["mean_radius", "clinic"])
        late_path = tmp_path / "late.csv"
        frame.to_csv(late_path, index=False)
        late = site_client(late_path, "late", port)
        outcome = late.run()
        assert not outcome.ok and "(shape)" in outcome.reason
        assert "mean_radius" in outcome.reason and "clinic" in outcome.reason
    finally:
        handle.stop()
        handle.wait(20)
        for t in threads:
            t.join(15)


def test_summary_pools_rare_values_and_merge_takes_the_union() -> None:
    a = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "town": ["a"] * 5 + ["rare"]})
    b = pd.DataFrame({"x": [10.0, 20.0], "town": ["b", "b"]})
    sa = summarize_data(a, np.array([0, 1, 0, 1, 0, 1]), min_category_count=5)
    sb = summarize_data(b, np.array([1, 1]), min_category_count=2)
    town = next(c for c in sa["columns"] if c["name"] == "town")
    assert town["values"] == {"a": 5} and town["other"] == 1  # "rare" is never named
    assert "rare" not in json.dumps(sa)
    merged = merge_summaries({"A": sa, "B": sb}, 5)
    assert merged.feature_names == ["x", "town=a", "town=b"]
    pooled = np.array([1, 2, 3, 4, 5, 6, 10, 20], dtype=float)
    assert merged.mean[0] == pytest.approx(pooled.mean()) and merged.scale[0] == pytest.approx(pooled.std())
    assert merged.classes == [0, 1]
    assert [s["n_classes"] for s in merged.report["sites"]] == [2, 1]
    assert columns_problem(sb, merged.columns) is None
    assert "missing column(s) town" in columns_problem(summarize_data(b[["x"]], np.array([1, 1]), 5),
                                                       merged.columns)


def test_one_class_in_all_sites_is_refused_in_words() -> None:
    s = summarize_data(pd.DataFrame({"x": [1.0, 2.0]}), np.array(["a", "a"]), 5)
    with pytest.raises(Exception, match="only one class"):
        merge_summaries({"A": s, "B": s}, 5)


def test_summary_message_is_checked() -> None:
    good = Summary(rows=2, labels=[["a", 1], [3, 1]], columns=[
        {"name": "x", "kind": "numeric", "missing": 0, "count": 2, "sum": 3.0, "sum_sq": 5.0, "min": 1.0,
         "max": 2.0},
        {"name": "t", "kind": "category", "missing": 0, "values": {"u": 2}, "other": 0}])
    back = parse_message(decode_frame(frame_to_bytes(*good.to_frame())))
    assert back == good
    for bad in ({"labels": [["a", 0]]}, {"columns": [{"name": "x", "kind": "blob", "missing": 0}]},
                {"columns": [{"name": "x", "kind": "numeric", "missing": 0, "count": 1, "sum": None,
                              "sum_sq": 1.0, "min": 1.0, "max": 1.0}]}):
        header = {**good.to_frame()[0], **bad}
        with pytest.raises(ProtocolError) as info:
            parse_message(decode_frame(frame_to_bytes(header, [], None)))
        assert info.value.code == "message"


def test_hello_features_are_optional_and_checked() -> None:
    old = Hello(client_id="a", n_samples=1, n_features=2)
    assert "features" not in old.to_frame()[0]  # a client of before the extension sends what it always sent
    assert parse_message(decode_frame(frame_to_bytes(*old.to_frame()))).features is None
    new = Hello(client_id="a", n_samples=1, n_features=2, features=["summary"])
    assert parse_message(decode_frame(frame_to_bytes(*new.to_frame()))).features == ["summary"]
    with pytest.raises(ProtocolError):
        parse_message(decode_frame(frame_to_bytes({**new.to_frame()[0], "features": "summary"}, [], None)))


def test_clients_page_tables_show_a_single_class_site() -> None:
    from ui.clients_view import data_report_tables, status_table

    report = merge_summaries({"A": summarize_data(pd.DataFrame({"x": [1.0, 2.0]}), np.array([0, 1]), 5),
                              "B": summarize_data(pd.DataFrame({"x": [3.0]}), np.array([1]), 5)}, 5).report
    tables = data_report_tables(report)
    assert tables["sites"]["Classes"].tolist() == ["2 classes", "1 class"]
    assert tables["columns"]["Used"].tolist() == ["yes"]
    assert status_table({"B": {"status": "connected", "n_classes": 1}})["Classes"].tolist() == ["1 class"]
