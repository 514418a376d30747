"""Outlier ejection's rules, on the Health object itself (the HTTP-level behaviour is in
test_metrics.py and test_faults.py)."""

from __future__ import annotations

from gateway.health import Health


def health() -> tuple[Health, list[tuple[str, bool]]]:
    changes: list[tuple[str, bool]] = []
    return Health(consecutive=5, cooldown=30, window=20, rate=0.5,
                  changed=lambda provider, up: changes.append((provider, up))), changes


def test_five_failures_in_a_row_eject_and_a_success_brings_it_back() -> None:
    h, changes = health()
    for _ in range(4):
        h.record("p", "upstream_error")
    assert not h.ejected("p")
    h.record("p", "upstream_timeout")
    assert h.ejected("p") and changes == [("p", False)]
    h.record("p", "upstream_error")  # failures while ejected are not counted
    h.record("p", "ok")
    assert not h.ejected("p") and changes == [("p", False), ("p", True)]


def test_rate_limits_client_errors_and_cut_off_clients_are_no_failures() -> None:
    h, _ = health()
    for outcome in ["rate_limited", "upstream_rejected", "content_filter", "client_closed"] * 10:
        h.record("p", outcome)
    assert not h.ejected("p")


def test_a_provider_failing_every_other_request_is_ejected_by_its_failure_rate() -> None:
    h, changes = health()
    for _ in range(9):
        h.record("p", "upstream_error")
        h.record("p", "ok")
    assert not h.ejected("p")  # 9 of 18: the window is not full yet
    h.record("p", "upstream_error")
    h.record("p", "ok")
    assert not h.ejected("p")  # the rate is judged when a failure comes in
    h.record("p", "quota_exhausted")  # 10 of the last 20 failed (a provider without balance fails too)
    assert h.ejected("p") and changes == [("p", False)]


def test_mostly_healthy_stays_in() -> None:
    h, _ = health()
    for i in range(200):
        h.record("p", "upstream_error" if i % 3 == 0 else "ok")  # a third fail: under the 50% rate
    assert not h.ejected("p")
