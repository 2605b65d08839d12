"""How many replicas a topic gets, and what a replicated topic requires of a write (engine.broker.kafka)."""

from __future__ import annotations

import pytest

from engine.broker.kafka import replicas_for, topic_configs

CASES = [(1, None, 1), (2, None, 2), (3, None, 3), (5, None, 3), (0, None, 1), (3, 2, 2), (1, 3, 3)]


@pytest.mark.parametrize(("brokers", "configured", "replicas"), CASES)
def test_a_topic_gets_the_configured_replicas_else_one_per_broker_at_most_three(
    brokers: int, configured: int | None, replicas: int
) -> None:
    assert replicas_for(brokers, configured) == replicas


def test_a_replicated_topic_needs_all_replicas_but_one_in_sync() -> None:
    assert topic_configs(1) == {}
    assert topic_configs(2) == {"min.insync.replicas": "1"}
    assert topic_configs(3) == {"min.insync.replicas": "2"}
