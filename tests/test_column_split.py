"""Split by a column: one client per value (a hospital, a region), named after it, the column never a feature."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fl.runs.words import for_cli

from fl.data import (
    DataError, column_groups, load_dataset, make_federated_data, partition, site_ids, split_candidates,
)
from fl.runs import simulation
from fl.runs.build import build_run
from fl.cli.main import main
from fl.runs.config import ConfigError, RunConfig
from fl.wire import CLIENT_ID_PATTERN
from tests.column_split_helpers import SITE_IDS, SITES, write_sites_csv
from tests.test_cli import ENV, ROOT, _listening_port, procs  # noqa: F401  (procs is a fixture)


@pytest.fixture
def sites_csv(tmp_path):
    return write_sites_csv(tmp_path / "sites.csv")


def _config(csv, **kw) -> RunConfig:
    base = dict(dataset="csv", csv_path=str(csv), target="outcome", partition="column", split_column="hospital",
                model="logreg", rounds=2, seed=0)
    return RunConfig(**{**base, **kw})


# ---------------------------------------------------------------- groups and names

def test_groups_are_the_values_in_order_with_missing_values_last():
    # Prepare: numbers that sort differently as text, and a missing value
    frame = pd.DataFrame({"site": [10, 2, np.nan, 1, 2.0, 10]})
    # Execute
    groups = column_groups(frame, "site")
    # Assert
    assert groups.values == ["1", "2", "10", "missing"]
    assert groups.codes.tolist() == [2, 1, 3, 0, 1, 2]
    assert groups.names == ["1", "2", "10", "missing"]


def test_text_values_sort_case_aside_and_become_safe_unique_ids():
    # Prepare
    frame = pd.DataFrame({"region": ["west", "North East", " South", "Zürich/Nord", "", "South"]})
    # Execute
    groups = column_groups(frame, "region")
    # Assert: stripped, sorted, the empty value is missing, ids keep to [A-Za-z0-9_.-]
    assert groups.values == ["North East", "South", "west", "Zürich/Nord", "missing"]
    assert groups.names == ["North_East", "South", "west", "Zurich_Nord", "missing"]


@pytest.mark.parametrize(("values", "expected"), [
    (["North East"], ["North_East"]),
    (["a/b", "a b", "a_b"], ["a_b", "a_b_2", "a_b_3"]),
    (["..", "日本"], ["site", "site_2"]),
    (["x" * 80, "x" * 80 + "y"], ["x" * 64, "x" * 62 + "_2"]),
])
def test_site_ids_are_valid_client_ids_and_unique(values, expected):
    # Execute
    ids = site_ids(values)
    # Assert
    assert ids == expected
    assert all(CLIENT_ID_PATTERN.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize(("frame", "column", "words"), [
    (pd.DataFrame({"site": ["a"] * 5, "x": range(5)}), "site", "only one value"),
    (pd.DataFrame({"site": [f"s{i}" for i in range(60)]}), "site", "60 distinct values"),
    (pd.DataFrame({"site": ["a", "b"], "x": [1, 2]}), "sit", "no column 'sit'"),
])
def test_a_column_without_2_to_50_values_is_refused_in_one_sentence(frame, column, words):
    # Execute / Assert
    with pytest.raises(DataError, match=words) as info:
        column_groups(frame, column)
    assert "\n" not in str(info.value)


def test_candidates_are_the_columns_with_2_to_50_values():
    # Prepare
    frame = pd.DataFrame({"id": range(100), "site": ["a", "b"] * 50, "one": [1] * 100, "y": [0, 1, 1, 0] * 25})
    # Execute / Assert
    assert split_candidates(frame, exclude=("y",)) == {"site": 2}


# ---------------------------------------------------------------- the partitioner

def test_column_partition_gives_each_group_its_rows():
    # Prepare
    groups = np.array([2, 0, 1, 0, 2, 2, 1, 0])
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    # Execute: n_clients does not matter, the groups do
    parts = partition(y, 99, "column", groups=groups, group_names=["a", "b", "c"], min_samples=2)
    # Assert
    assert [p.tolist() for p in parts] == [[1, 3, 7], [2, 6], [0, 4, 5]]
    assert all(p.dtype == np.int64 for p in parts)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({}, "split column's value of every row"),
    ({"groups": np.array([0, 0, 0, 1]), "group_names": ["big", "tiny"]}, "'tiny' keeps 1 training row"),
])
def test_column_partition_refuses_missing_groups_and_tiny_sites(kwargs, words):
    # Execute / Assert
    with pytest.raises(DataError, match=words):
        partition(np.array([0, 1, 0, 1]), 2, "column", min_samples=2, **kwargs)


# ---------------------------------------------------------------- loading and the server's split

def test_the_split_column_is_not_a_feature_and_built_in_data_has_none(sites_csv):
    # Execute
    ds = load_dataset("csv", csv_path=str(sites_csv), target="outcome", split_column="hospital")
    # Assert
    assert ds.feature_names == ["age", "dose", "marker"]
    assert ds.groups is not None and ds.groups.names == SITE_IDS
    assert any("hospital" in note and "split column" in note for note in ds.notes)
    with pytest.raises(DataError, match="Only a CSV can be split by a column"):
        load_dataset("iris", split_column="x")
    with pytest.raises(DataError, match="cannot be the target"):
        load_dataset("csv", csv_path=str(sites_csv), target="outcome", split_column="outcome")


def test_the_server_keeps_the_same_stratified_test_rows_and_the_rest_is_split_by_site(sites_csv):
    # Prepare
    plain = load_dataset("csv", csv_path=str(sites_csv), target="outcome")
    by_site = load_dataset("csv", csv_path=str(sites_csv), target="outcome", split_column="hospital")
    # Execute
    a = make_federated_data(plain, n_clients=4, partition_method="iid", test_size=0.25, seed=3)
    b = make_federated_data(by_site, n_clients=7, partition_method="column", test_size=0.25, seed=3)
    # Assert: the same held-out rows; one client per site holding exactly that site's other rows
    age_a, age_b = plain.feature_names.index("age"), by_site.feature_names.index("age")
    assert np.array_equal(a.split.y_test, b.split.y_test)
    assert np.array_equal(a.split.X_test[:, age_a], b.split.X_test[:, age_b])
    assert b.site_names == SITE_IDS and len(b.parts) == 4
    frame = pd.read_csv(sites_csv)

    def keys(X: np.ndarray) -> set:  # a row by its three measurements, as written to the file
        return {tuple(r) for r in np.round(X, 3).tolist()}

    held_out = keys(b.split.X_test)
    for name, value, rows in zip(b.site_names, sorted(SITES, key=str.casefold), b.parts):
        site = keys(frame.loc[frame.hospital == value, ["age", "dose", "marker"]].to_numpy())
        assert keys(b.split.X_train[rows]) == site - held_out, name


# ---------------------------------------------------------------- config and build

def test_the_column_split_needs_a_csv_and_its_column():
    # Execute / Assert
    with pytest.raises(ConfigError, match="only a CSV can be split by a column"):
        RunConfig(dataset="iris", partition="column", split_column="x").validate()
    with pytest.raises(ConfigError) as missing:
        RunConfig(dataset="csv", csv_path="a.csv", target="y", partition="column").validate()
    assert "--split-column" in for_cli(str(missing.value))  # the command line's words (a page says its label)


def test_the_number_of_clients_is_the_number_of_values(sites_csv):
    # Execute: --clients says 10 and is overridden; a count that cannot fit four sites is refused
    plan = build_run(_config(sites_csv, clients=10, min_clients=2))
    # Assert
    assert plan.config.clients == 4 and plan.client_ids == SITE_IDS
    assert "hospital" not in plan.task.feature_names and plan.task.n_features == 3
    with pytest.raises(ConfigError, match="makes 4 clients .*min_clients \\(5\\)"):
        build_run(_config(sites_csv, min_clients=5))


# ---------------------------------------------------------------- end to end

def test_a_simulation_split_by_hospital_names_its_clients_after_them(sites_csv, tmp_path, no_thread_leaks):
    # Prepare
    config = _config(sites_csv, rounds=3, clients=10, local_epochs=3)  # three gradient steps a round
    out = tmp_path / "run"
    # Execute
    handle = simulation.start(config, out_dir=str(out))
    result = handle.wait(timeout=120)
    # Assert
    assert result is not None and result.status == "completed"
    assert result.final_metrics["accuracy"] > 0.7
    assert "hospital" not in handle.plan.task.feature_names
    assert not any(name.startswith("hospital") for name in handle.plan.task.feature_names)
    assert sorted(set(pd.read_csv(out / "clients.csv")["client_id"])) == sorted(SITE_IDS)
    assert json.loads((out / "config.json").read_text())["clients"] == 4
    summary = json.loads((out / "partition.json").read_text())
    assert summary["clients"] == SITE_IDS
    assert summary["split_column"] == {"column": "hospital", "values": sorted(SITES, key=str.casefold)}
    assert [sum(row) for row in summary["counts"]] == [len(p) for p in handle.data.parts]


def test_cli_simulate_split_by_a_column(sites_csv, tmp_path):
    # Execute
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "fl", "simulate", "--dataset", "csv", "--csv", str(sites_csv),
                           "--target", "outcome", "--partition", "column", "--split-column", "hospital",
                           "--model", "logreg", "--rounds", "2", "--clients", "7", "--out", str(out)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    # Assert
    assert proc.returncode == 0, proc.stderr
    assert "split by 'hospital': 4 clients, one per value (North_East, South, west, Zurich_Nord); " \
           "--clients 7 is ignored" in proc.stderr
    assert "completed: accuracy" in proc.stdout
    assert sorted(set(pd.read_csv(out / "clients.csv")["client_id"])) == sorted(SITE_IDS)


def test_partition_clients_rebuild_their_site_from_the_same_csv(sites_csv, tmp_path, procs):  # noqa: F811
    # Prepare: a server and one client process per hospital, each told "partition i of 4"
    split = ["--csv", str(sites_csv), "--target", "outcome", "--partition", "column", "--split-column", "hospital"]
    out = tmp_path / "hosted"
    server = procs.spawn("server_new.py", *split, "--port", "0", "--min-clients", "4", "--rounds", "2",
                         "--model", "logreg", "--wait", "60", "--out", str(out))
    port = _listening_port(server)
    clients = [procs.spawn("client_new.py", "--port", str(port), *split, "--partition-id", str(i),
                           "--num-partitions", "4") for i in range(4)]
    # Execute
    _, stderr = server.communicate(timeout=120)
    said = [c.communicate(timeout=30)[0] for c in clients]
    # Assert: every site trained under its own name on the rows a simulation gives it
    assert server.returncode == 0, stderr
    assert all(c.returncode == 0 for c in clients), said
    rows = build_run(_config(sites_csv)).data.parts
    for i, (name, text) in enumerate(zip(SITE_IDS, said)):
        assert text.startswith(f"{name}: connecting to 127.0.0.1:{port} with {len(rows[i])} local rows"), text
    assert sorted(set(pd.read_csv(out / "clients.csv")["client_id"])) == sorted(SITE_IDS)


def test_a_partition_client_told_another_count_is_refused(sites_csv, capsys):
    # Execute
    code = main(["client", "--csv", str(sites_csv), "--target", "outcome", "--partition", "column",
                 "--split-column", "hospital", "--partition-id", "0", "--num-partitions", "3", "--port", "1"])
    # Assert
    err = capsys.readouterr().err
    assert code == 2
    assert "makes 4 partitions, one per value" in err and "use --num-partitions 4" in err


def test_deploy_writes_one_command_per_site(sites_csv):
    # Prepare
    from ui import deploy_view as deploy

    config = build_run(_config(sites_csv)).config
    # Execute
    commands = deploy.partition_commands(config, "server", 9000, "tok")
    # Assert
    assert len(commands) == 4
    assert all("--csv sites.csv --target outcome" in c and "--partition column --split-column hospital" in c
               for c in commands)
    assert commands[3].endswith("--partition-id 3 --num-partitions 4")
    assert deploy.partition_commands(RunConfig(dataset="csv", csv_path="a.csv", target="y"), "h", 1, None) == []
