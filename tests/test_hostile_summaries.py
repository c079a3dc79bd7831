"""A hostile site cannot break or steer a federation built from data summaries (issue 23).

Three honest breast-cancer sites (``FederatedClient``s, as in
tests/test_cross_silo.py) and a scripted hostile site speaking the protocol
by hand (tests/summary_attack_helpers.py). A summary that could not come from
real data is refused at once with the reason, and the honest run is exactly
the run without it; a site that disagrees on columns or lies consistently
within its declared rows is taken, and sways the task no more than those
rows allow; a site lacking a column the task needs is left out before round
1; memory stays that of a clean run (measured in processes of their own).
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fl.data import training_row_count
from fl.federation.server import ServerSettings
from fl.runs import hosting
from fl.runs.config import RunConfig
from fl.wire import Error, Summarize, Welcome
from tests.site_helpers import run_sites, site_client
from tests.summary_attack_helpers import TARGET, HostileThread, attempt, honest_summary, label_bomb
from tests.test_cross_silo import make_sites

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 30
SHARE = 0.2  # RunConfig's local_test_size


def config() -> RunConfig:
    return RunConfig(dataset="csv", target=TARGET, model="logreg", rounds=ROUNDS, min_clients=3, clients=3)


def run(sites: list[Path], wait: int, hostile: list[HostileThread] = (), late=None) -> dict:
    """Host a server without data, start the ``hostile`` first-cohort sites, then the three honest ones; ``late``
    (port) runs once the task is built. The result, the server's task and the run's state at the end."""
    handle = hosting.host(config(), ServerSettings(port=0, wait_for_clients=wait, join_timeout_s=60),
                          data_at_clients=True)
    port = handle.server.address[1]
    for h in hostile:
        h.args = (port, *h.args)
        h.start()
    time.sleep(0.3 if hostile else 0)  # the hostile sites' summaries are in first
    clients = [site_client(p, f"site{i}", port, TARGET) for i, p in enumerate(sites, 1)]
    threads, results = run_sites(clients)
    late_replies = None
    try:
        if late is not None:
            deadline = time.monotonic() + 60
            while not handle.server.task_ready and time.monotonic() < deadline:
                time.sleep(0.01)
            late_replies = late(port)
        result = handle.wait(120)
    finally:
        handle.stop()
        for t in [*threads, *hostile]:
            t.join(15)
    return {"result": result, "task": handle.server.task, "state": handle.state.snapshot(), "clients": results,
            "late": late_replies}


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> list[Path]:
    return make_sites(tmp_path_factory.mktemp("sites"))


@pytest.fixture(scope="module")
def clean(sites: list[Path]) -> dict:
    """The run of the three honest sites alone: what every hostile run is compared with."""
    out = run(sites, wait=3)
    assert out["result"].status == "completed", out["result"].error
    return out


@pytest.fixture(scope="module")
def base(sites: list[Path]) -> dict:
    """site1's true summary, to lie from."""
    return honest_summary(sites[0], "site1", Summarize(min_category_count=5, target=TARGET, local_test_size=SHARE))


def honest_ran_everything(out: dict) -> None:
    """The run completed, every honest site trained every round, and nothing was charged to one."""
    assert out["result"] is not None and out["result"].status == "completed", out["result"] and out["result"].error
    for cid in ("site1", "site2", "site3"):
        assert out["clients"][cid].ok and out["clients"][cid].rounds_trained == ROUNDS, out["clients"][cid]
        assert out["state"]["clients"][cid]["failures"] == 0


def col(summary: dict, name: str) -> dict:
    return next(c for c in summary["columns"] if c["name"] == name)


def put(summary: dict, entry: dict) -> None:
    """Replace the column of ``entry``'s name."""
    summary["columns"] = [entry if c["name"] == entry["name"] else c for c in summary["columns"]]


def _lies(base: dict) -> dict[str, tuple[dict, int, str]]:
    """Each lie of the issue: (summary, hello.n_samples, words the refusal must hold)."""
    n = base["rows"]
    train = training_row_count(n, SHARE)

    def lie(**columns) -> dict:
        s = copy.deepcopy(base)
        for name, fields in columns.items():
            col(s, name).update(fields)
        return s

    surrogate_label = copy.deepcopy(base)
    surrogate_label["labels"][0][0] += "\ud800"
    long_label = copy.deepcopy(base)
    long_label["labels"][0][0] = "x" * 50_000
    clinic = col(base, "clinic")["values"]
    return {
        "count 10^400": (lie(mean_radius={"count": 10**400}), n, "beyond 2^53"),  # the wire refuses it first
        "count 10^9 on two columns": (lie(mean_radius={"count": 10**9, "sum": 1e13},
                                          mean_texture={"count": 10**9, "sum": 1e13}), n, "count"),
        "count 0 with a sum of -5000": (lie(mean_radius={"count": 0, "missing": train, "sum": -5000.0, "sum_sq": 0.0,
                                                         "min": None, "max": None}), n, "count 0"),
        "a negative variance": (lie(mean_radius={"sum_sq": 1.0}), n, "negative variance"),
        "a variance min and max do not allow": (lie(mean_radius={"sum_sq": 1e9}), n, "variance"),
        "min above max": (lie(mean_radius={"min": 1e4}), n, "above max"),
        "missing 10^6": (lie(mean_radius={"missing": 10**6}), n, "missing"),
        "more rows than hello": (copy.deepcopy(base), n - 1, "hello"),
        "a surrogate in a category": (lie(clinic={"values": {k + "\ud800": v for k, v in clinic.items()}}), n,
                                      "surrogate"),
        "a surrogate in a label": (surrogate_label, n, "surrogate"),
        "a label of 50,000 characters": (long_label, n, "50000 characters"),
        "2,000 labels and one of 50,000 characters": (label_bomb(base), 2_001, "2001 labels"),
        "1,000 categories": (lie(clinic={"values": {f"v{i}": 5 for i in range(1_000)}, "other": 0}), n, "at most 50"),
    }


def test_lying_summaries_are_refused_and_the_honest_run_is_the_clean_one(sites, clean, base) -> None:
    # Prepare: every lie tried before the honest sites join (first cohort), two of them again once the task is
    # built (late joiners, checked off the event loop)
    lies = _lies(base)
    first = [HostileThread(summary, n, f"evil{i}", 30.0) for i, (summary, n, _) in enumerate(lies.values())]

    def late(port: int) -> list:
        return [attempt(port, lies[name][0], lies[name][1], f"late{i}")
                for i, name in enumerate(["count 10^9 on two columns", "2,000 labels and one of 50,000 characters"])]

    # Execute
    out = run(sites, wait=3, hostile=first, late=late)
    # Assert: each refused at once, naming its problem
    for (name, (_, _, words)), h in zip(lies.items(), first):
        assert h.error is None, (name, h.error)
        assert isinstance(h.reply, Error) and h.reply.code in ("summary", "message", "json"), (name, h.reply)
        assert words in h.reply.message, (name, h.reply.message)
    assert all(isinstance(r, Error) and r.code in ("summary", "message") for r in out["late"]), out["late"]
    # ... and the honest sites ran exactly the clean run: same task, same model's metrics, no hostile site joined
    honest_ran_everything(out)
    assert out["task"].to_dict() == clean["task"].to_dict()
    for key in ("accuracy", "loss", "f1_macro"):
        assert out["result"].final_metrics[key] == pytest.approx(clean["result"].final_metrics[key], abs=1e-9)
    assert set(out["state"]["clients"]) == {"site1", "site2", "site3"}


def neutral(clean_task, rows: int) -> dict:
    """A consistent summary whose numbers leave the clean scaler as it is: each numeric column with the clean
    mean and spread (values within ±10 standard deviations), over ``rows`` rows, half of each class."""
    train = training_row_count(rows, SHARE)
    stats = clean_task.standardize
    columns = []
    for name, mu, sd in zip(clean_task.feature_names, stats["mean"], stats["scale"]):
        if "=" in name:
            continue
        columns.append({"name": name, "kind": "numeric", "missing": 0, "count": train, "sum": mu * train,
                        "sum_sq": train * (sd * sd + mu * mu), "min": mu - 10 * sd, "max": mu + 10 * sd})
    columns.append({"name": "clinic", "kind": "category", "missing": 0, "values": {"north": train}, "other": 0})
    return {"rows": rows, "labels": [["benign", rows // 2], ["malignant", rows - rows // 2]], "columns": columns}


def test_a_site_that_disagrees_or_lies_within_its_rows_sways_only_its_share(sites, clean) -> None:
    # Prepare: 'evil' (100 rows) marks clinic dropped, sends mean_radius as text, says every mean_perimeter is
    # 10,000 and sends a report of the wrong shape; 'lacking' (60 rows) has no mean_texture column
    evil = neutral(clean["task"], 100)
    t = training_row_count(100, SHARE)
    put(evil, {"name": "clinic", "kind": "dropped", "missing": 0, "reason": "no values"})
    put(evil, {"name": "mean_radius", "kind": "category", "missing": 0, "values": {"lots": t}, "other": 0})
    col(evil, "mean_perimeter").update(sum=1e4 * t, sum_sq=1e8 * t, min=1e4, max=1e4)
    evil["report"] = {"notes": 1}
    lacking = neutral(clean["task"], 60)
    lacking["columns"] = [c for c in lacking["columns"] if c["name"] != "mean_texture"]
    hostile = [HostileThread(evil, 100, "evil", 60.0), HostileThread(lacking, 60, "lacking", 60.0)]
    # Execute
    out = run(sites, wait=5, hostile=hostile)
    # Assert: 'lacking' is left out before round 1 with the column named; 'evil' is taken
    assert isinstance(hostile[1].reply, Error) and hostile[1].reply.code == "shape", \
        (hostile[1].reply, hostile[1].error)
    assert "mean_texture" in hostile[1].reply.message
    assert isinstance(hostile[0].reply, Welcome), hostile[0].reply
    honest_ran_everything(out)
    task, before = out["task"], clean["task"]
    assert task.feature_names == before.feature_names and task.classes == before.classes
    mean = dict(zip(task.feature_names, task.standardize["mean"]))
    scale = dict(zip(task.feature_names, task.standardize["scale"]))
    mean0 = dict(zip(before.feature_names, before.standardize["mean"]))
    scale0 = dict(zip(before.feature_names, before.standardize["scale"]))
    for name in task.feature_names:
        if name == "mean_perimeter":
            continue
        # the columns it disagreed on come from the honest sites alone; the others it left as they were
        exact = name == "mean_radius" or name.startswith("clinic=")
        assert mean[name] == pytest.approx(mean0[name], rel=1e-12 if exact else 1e-9), name
        assert scale[name] == pytest.approx(scale0[name], rel=1e-12 if exact else 1e-6), name
    # its lie moves mean_perimeter by its 80 training rows' weight, no more
    n = sum(training_row_count(r, SHARE) for r in (280, 229, 60))
    mu, var = mean0["mean_perimeter"], scale0["mean_perimeter"] ** 2
    assert mean["mean_perimeter"] == pytest.approx((n * mu + t * 1e4) / (n + t), rel=1e-9)
    assert scale["mean_perimeter"] ** 2 == pytest.approx(n * var / (n + t) + n * t * (mu - 1e4) ** 2 / (n + t) ** 2,
                                                         rel=1e-9)
    assert out["result"].final_metrics["accuracy"] >= clean["result"].final_metrics["accuracy"] - 0.05
    report = out["state"]["data_report"]
    said = {(d["site"], d["column"]) for d in report["disagreements"]}
    assert said == {("evil", "clinic"), ("evil", "mean_radius")}
    assert [d["client_id"] for d in report["left_out"]] == ["lacking"]
    notes = next(s["notes"] for s in report["sites"] if s["client_id"] == "evil")
    assert any("report was left out" in note for note in notes) and any("clinic" in note for note in notes)
    assert out["state"]["clients"]["lacking"]["status"] == "gone"


def _peak(scenario: str) -> dict:
    """One scenario of tests/summary_attack_helpers.py in a process of its own: its peak memory and outcome."""
    proc = subprocess.run([sys.executable, "-m", "tests.summary_attack_helpers", scenario], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_memory_stays_that_of_a_clean_run() -> None:
    """Server and honest clients share the process: the label bomb (refused) and a maximal label set that is
    taken (98 labels of 256 characters with the honest two: 100 classes) cost them less than 100 MiB."""
    clean_run, bomb, long = _peak("clean"), _peak("bomb"), _peak("long_labels")
    print(json.dumps([clean_run, bomb, long]))
    assert clean_run["status"] == "completed" and clean_run["honest_ok"]
    assert bomb["reply"] == "Error" and "2001 labels" in bomb["message"] and bomb["honest_ok"]
    assert long["reply"] == "Welcome" and long["classes"] == 100 and long["status"] == "completed" and long["honest_ok"]
    for other in (bomb, long):
        assert other["peak_mib"] - clean_run["peak_mib"] < 100, (clean_run, other)
    assert math.isfinite(clean_run["peak_mib"])


def test_an_honest_site_with_an_empty_column_trains_with_it_neutral(sites, tmp_path) -> None:
    """The per-site rule spares honest sites: site3's mean_radius is empty and its mean_texture text ("n/a"),
    the others hold both as numbers, so both stay features; site3 fills them with the task's mean (0 once
    standardised) and trains every round, and the data report says it disagreed."""
    # Prepare
    import pandas as pd

    frame = pd.read_csv(sites[2])
    frame["mean_radius"] = None
    frame["mean_texture"] = "n/a"
    odd = tmp_path / "site3.csv"
    frame.to_csv(odd, index=False)
    # Execute
    out = run([sites[0], sites[1], odd], wait=3)
    # Assert
    honest_ran_everything(out)
    assert {"mean_radius", "mean_texture"} <= set(out["task"].feature_names)
    said = {(d["site"], d["column"]) for d in out["state"]["data_report"]["disagreements"]}
    assert said == {("site3", "mean_radius"), ("site3", "mean_texture")}
    assert out["result"].final_metrics["accuracy"] > 0.9
