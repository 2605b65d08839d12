"""The brokers' ACLs, derived from a declaration (the toy saga's): one principal per service, which
may write only what its participants publish."""

from __future__ import annotations

import pytest

from engine.ops import acls
from engine.ops.acls import derive, may
from tests.toy.saga import TOY

ACLS = derive(TOY)


def written(principal: str) -> set[str]:
    return {a.name for a in ACLS if a.principal == principal and a.operation == "Write"}


def test_each_service_writes_only_the_topics_of_what_it_publishes_its_dead_letters_and_retry_notices() -> None:
    # first: FirstDone → toy.second, FirstFailed → toy.failures; its compensator: ToyFailed → toy.outcomes
    assert written("User:first") == {
        "toy.second", "toy.failures", "toy.outcomes", "toy.first.dlq", "toy.failures.dlq", "toy.retries"
    }  # fmt: skip
    assert written("User:second") == {"toy.outcomes", "toy.failures", "toy.second.dlq", "toy.retries"}


def test_a_service_cannot_write_the_topic_it_consumes_nor_a_step_before_it() -> None:
    assert not may(ACLS, "User:second", "Write", "toy.second")
    assert not may(ACLS, "User:second", "Write", "toy.first")
    assert may(ACLS, "User:second", "Read", "toy.second")


def test_a_service_reads_back_only_the_topics_it_publishes_to_and_the_one_it_consumes() -> None:
    """A rebuild reads back what the service published, from the topics it wrote it to: nothing more."""
    read = {a.name for a in ACLS if a.principal == "User:second" and a.operation == "Read" and a.resource == "Topic"}
    assert read == {"toy.second", "toy.outcomes", "toy.failures"}
    assert not may(ACLS, "User:second", "Read", "toy.first")
    assert may(ACLS, "User:second", "Describe", "toy.first")  # it checks that the topic exists


def test_the_tracker_reads_every_topic_it_observes_and_writes_only_its_changelog() -> None:
    observed = [*TOY.topics, TOY.retries_topic, "toy.first.dlq", "toy.second.dlq", "toy.failures.dlq"]
    assert all(may(ACLS, "User:tracker", "Read", t) for t in observed)
    assert written("User:tracker") == {"toy-tracker-sagas-changelog"}
    created = {a.name for a in ACLS if a.operation == "Create"}
    assert created == {"toy-tracker-sagas-changelog"}  # no one else makes topics: whoever applies the ACLs does


def test_the_starter_writes_only_the_start_topic_and_reads_the_outcomes() -> None:
    assert written("User:starter") == {"toy.first"}
    reads = {a.name for a in ACLS if a.principal == "User:starter" and a.operation == "Read"}
    assert reads == {"toy.outcomes"}


def test_every_consumer_group_is_read_by_its_own_service_alone() -> None:
    groups = {(a.name, a.principal) for a in ACLS if a.resource == "Group" and a.operation == "Read"}
    assert groups == {
        ("first", "User:first"), ("first.compensations", "User:first"), ("second", "User:second"),
        ("toy-tracker", "User:tracker"),
    }  # fmt: skip


def test_every_principal_may_describe_every_topic_of_the_saga() -> None:
    for principal in acls.principals(ACLS):
        assert all(may(ACLS, principal, "Describe", t) for t in TOY.all_topics()), principal


def test_no_cluster_right_and_no_transactional_id_is_granted() -> None:
    assert {a.resource for a in ACLS} == {"Topic", "Group"}
    assert {a.operation for a in ACLS} <= {"Read", "Write", "Describe", "Create"}


def test_every_rule_says_why() -> None:
    assert all(a.why for a in ACLS)


def test_the_tracker_and_the_starter_may_be_named_but_not_as_a_service() -> None:
    named = derive(TOY, tracker="observer", starter="client-app")
    assert acls.principals(named) == ["User:first", "User:second", "User:observer", "User:client-app"]
    with pytest.raises(ValueError, match="User:first would be two roles'"):
        derive(TOY, starter="first")
    with pytest.raises(ValueError, match="1 to 64 letters"):
        derive(TOY, tracker="a b")


def test_each_rule_is_one_kafka_acls_line() -> None:
    rule = next(a for a in ACLS if a.principal == "User:second" and a.operation == "Write")
    assert rule.command("broker:9093", "admin.properties") == (
        "kafka-acls.sh --bootstrap-server broker:9093 --command-config admin.properties --add "
        f"--allow-principal User:second --operation Write --topic {rule.name}"
    )
    group = next(a for a in ACLS if a.resource == "Group")
    assert group.command("b:1").endswith(f"--operation Read --group {group.name}")
