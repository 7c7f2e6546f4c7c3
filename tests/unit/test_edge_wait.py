"""edge_wait_s: the wait between the edge and the worker, from the edge's stamp."""

from __future__ import annotations

import pytest

from service.api.edge_wait import CLOCK_SKEW_S, EDGE_START_HEADER, edge_wait_s

NOW = 1_800_000_000.0
STARTED = NOW - 3600  # the worker's start


def test_the_wait_is_the_time_since_the_edge_stamped_the_call() -> None:
    metadata = [("authorization", "Bearer x"), (EDGE_START_HEADER, f"{NOW - 0.25:.6f}")]
    assert edge_wait_s(metadata, NOW, STARTED) == pytest.approx(0.25, abs=1e-6)


def test_an_edge_clock_a_little_ahead_reads_as_no_wait() -> None:
    assert edge_wait_s([(EDGE_START_HEADER, str(NOW + CLOCK_SKEW_S / 2))], NOW, STARTED) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        str(NOW + CLOCK_SKEW_S + 5),  # further ahead than a clock can be
        str(STARTED - 1),  # stamped before this worker served anything
        "0",
        "nan",
        "inf",
        "-1",
        "yesterday",
        "",
    ],
)
def test_a_stamp_no_clock_explains_is_no_measurement(value: str) -> None:
    assert edge_wait_s([(EDGE_START_HEADER, value)], NOW, STARTED) is None


def test_without_the_edge_there_is_no_measurement() -> None:
    assert edge_wait_s([("authorization", "Bearer x")], NOW, STARTED) is None
    assert edge_wait_s((), NOW, STARTED) is None
