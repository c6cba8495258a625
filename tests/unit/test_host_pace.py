"""tests/hostpace.py: the worker count the suite takes from the host it runs on."""

from __future__ import annotations

import pytest

from tests import hostpace

pytestmark = pytest.mark.unit


def pace(cores=2, share=1.0, lag=0.1):
    return {"cores": cores, "cpu_share": share, "lag_ms": lag, "load": 0.0}


def test_an_idle_two_core_host_gets_eight_workers():
    assert hostpace.workers_for(pace()) == 8


def test_a_busy_process_on_every_core_halves_them():
    assert hostpace.workers_for(pace(share=0.5)) == 4


def test_a_host_that_wakes_late_gets_fewer_and_never_below_two():
    assert hostpace.workers_for(pace(lag=4.0)) == 4  # 8 x 2 ms / 4 ms
    assert hostpace.workers_for(pace(share=0.1, lag=50.0)) == hostpace.MIN_WORKERS


def test_more_cores_are_capped():
    assert hostpace.workers_for(pace(cores=16)) == hostpace.MAX_WORKERS


def test_the_environment_decides_when_it_says(monkeypatch):
    monkeypatch.setenv("PICOCHARGE_TEST_WORKERS", "3")
    workers, measured = hostpace.choose_workers()
    assert workers == 3 and measured["forced"] and 0 < measured["cpu_share"] <= 1.0
