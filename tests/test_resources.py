"""Memory limits: data that would not fit is refused before anything is allocated."""

from __future__ import annotations

import pytest

from fl.data import DataError
from fl.runs.config import RunConfig
from fl.data.resources import ResourceError, available_memory, check_config_size, check_data_size, estimate_bytes
from tests.apptest_helpers import new_app, texts

GIB = 1 << 30


def test_estimate_counts_every_working_copy():
    # 1,000 rows x 10 features x 8 bytes x 6 copies
    assert estimate_bytes(1000, 10) == 480_000


def test_a_size_over_half_the_available_memory_is_refused_with_the_largest_that_fits():
    # Prepare: 16 GiB available, so 8 GiB for the run
    # Execute
    with pytest.raises(ResourceError) as caught:
        check_data_size(2_000_000, 10_000, available=16 * GIB, what="The synthetic dataset's")
    # Assert: how much it needs, what there is, and what would fit (8 GiB / (10,000 x 8 x 6) = 17,895 rows)
    assert str(caught.value) == (
        "The synthetic dataset's 2,000,000 rows x 10,000 features would need about 894.1 GiB of memory, but this "
        "machine has 16.0 GiB available (a run may use half); with 10,000 features use at most 17,895 rows, or "
        "fewer features.")
    assert isinstance(caught.value, DataError)  # every caller that reports bad data reports it too


def test_sizes_that_fit_and_built_in_datasets_pass():
    check_data_size(17_895, 10_000, available=16 * GIB)
    check_config_size(RunConfig(dataset="synthetic", n_samples=100_000, n_features=50), available=16 * GIB)
    check_config_size(RunConfig(dataset="digits"), available=1)  # built-in sets are small and fixed
    assert available_memory() > 0


def test_the_page_refuses_a_synthetic_set_larger_than_memory(app_env):
    # Prepare
    at = new_app()
    at.sidebar.selectbox(key="cfg_dataset").set_value("synthetic").run()
    # Execute
    at.sidebar.number_input(key="cfg_n_samples").set_value(2_000_000).run()
    at.sidebar.number_input(key="cfg_n_features").set_value(10_000).run()
    # Assert: said before Start, in the page, with no traceback
    assert not at.exception
    assert "would need about 894.1 GiB of memory" in texts(at.error)
