"""Data: datasets, CSV files, labels, partitions and memory limits.

Everything here is seeded and a pure function of its inputs, so a server and
a client on another machine rebuild the same rows. Import from ``fl.data``.
"""

from fl.data.column_split import (
    MAX_GROUPS, MIN_GROUPS, SPLIT_REASON, ColumnGroups, column_groups, group_count, guess_split_column, site_ids,
    split_candidates,
)
from fl.data.columns import ColumnReport, exclusion_reason, id_like_name, leak_score, parse_columns
from fl.data.csvdata import (
    ClientCsv, ColumnPlan, CsvReport, column_report, describe_csv, features_from_frame, frame_to_features,
    load_client_csv, load_client_frame, plan_features,
)
from fl.data.csvread import CsvTable, read_csv_bytes, read_csv_table
from fl.data.datasets import (
    DATASETS, Dataset, FederatedData, Split, apply_standardization, load_dataset, local_holdout, training_row_count,
    make_federated_data, split_server_holdout, standardization_stats,
)
from fl.data.labels import (
    TargetSplit, apply_bins, bin_labels_note, looks_continuous, normalize_labels, prepare_target,
    quantile_edges, split_target, target_rows,
)
from fl.data.target_guess import TargetGuess, guess_target, guess_target_column
from fl.data.errors import DataError
from fl.data.partition import PARTITIONERS, label_distribution, partition
from fl.data.resources import ResourceError, check_config_size

__all__ = [
    "MAX_GROUPS", "MIN_GROUPS", "SPLIT_REASON", "ColumnGroups", "column_groups", "group_count", "guess_split_column", "site_ids",
    "split_candidates",
    "ColumnReport", "exclusion_reason", "id_like_name", "leak_score", "parse_columns", "column_report",
    "ClientCsv", "ColumnPlan", "CsvReport", "describe_csv", "features_from_frame", "frame_to_features",
    "load_client_csv", "load_client_frame", "plan_features", "CsvTable", "read_csv_bytes", "read_csv_table",
    "DATASETS", "Dataset", "FederatedData", "Split", "apply_standardization", "load_dataset", "local_holdout",
    "training_row_count",
    "make_federated_data", "split_server_holdout", "standardization_stats", "TargetSplit", "apply_bins",
    "bin_labels_note", "guess_target", "guess_target_column", "TargetGuess", "looks_continuous", "normalize_labels", "prepare_target", "quantile_edges",
    "split_target", "target_rows", "PARTITIONERS", "DataError", "label_distribution", "partition", "ResourceError",
    "check_config_size",
]
