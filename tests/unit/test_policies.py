"""Pure runtime policies: retry decisions, queue weights, schedules, producer defaults."""

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

import workhorse as wh
from workhorse.options import HandlerOptions
from workhorse.producer import EnqueueRequest, build_new_job, unique_key_for
from workhorse.queues import parse_queues, weighted_order
from workhorse.retry import Action, decide


def test_decide_follows_the_status_table():
    options = HandlerOptions(retries=2, backoff=wh.constant(7))
    assert decide(wh.Status.SUCCESS, 1, options).action is Action.SUCCEED
    assert decide(wh.Status.NO_RESPONSE, 1, options).action is Action.SUCCEED
    assert decide(wh.Status.CANCELLED, 1, options).action is Action.CANCEL
    assert decide(wh.Status.FORBIDDEN, 1, options).action is Action.BURY
    retry = decide(wh.Status.INTERNAL_ERROR, 2, options)
    assert (retry.action, retry.delay) == (Action.RETRY, 7)
    assert decide(wh.Status.UNKNOWN, 2, options).action is Action.RETRY
    assert decide(wh.Status.UNAVAILABLE, 3, options).action is Action.BURY
    assert decide(wh.Status.BAD_REQUEST, 1, HandlerOptions(skip_dead=True)).keep is False


def test_weighted_order_prefers_heavy_queues_in_proportion():
    rng = random.Random(7)
    firsts = Counter(weighted_order({"critical": 6, "default": 3, "low": 1}, rng)[0]
                     for _ in range(20_000))
    share = {q: n / 20_000 for q, n in firsts.items()}
    assert share["critical"] == pytest.approx(0.6, abs=0.02)
    assert share["default"] == pytest.approx(0.3, abs=0.02)
    assert share["low"] == pytest.approx(0.1, abs=0.02)
    assert sorted(weighted_order({"a": 1, "b": 1}, rng)) == ["a", "b"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("critical=10,default=1", {"critical": 10, "default": 1}),
        ("a,b", {"a": 1, "b": 1}),
        (["x", "y"], {"x": 1, "y": 1}),
        ({"m": 3}, {"m": 3}),
        (None, {"default": 1, "mail": 1}),
    ],
)
def test_parse_queues(spec, expected):
    assert parse_queues(spec, default=["mail", "default", "mail"]) == expected


@pytest.mark.parametrize("spec", ["a=x", "a=0", {}])
def test_parse_queues_rejects_bad_specs(spec):
    with pytest.raises(wh.ConfigurationError):
        parse_queues(spec, default=[])


def test_interval_schedule_ticks_on_multiples_of_the_interval():
    schedule = wh.Schedule("job", interval=60)
    assert schedule.next_tick(119.5) == 120
    assert schedule.next_tick(120) == 180
    assert schedule.tick_key(120) != schedule.tick_key(180)


def test_cron_schedule_has_a_seconds_field_and_reads_utc():
    schedule = wh.Schedule("job", cron="*/15 * * * * *")
    start = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC).timestamp()
    assert schedule.next_tick(start) == start + 14
    nightly = wh.Schedule("job", cron="0 30 2 * * *")
    tick = datetime.fromtimestamp(nightly.next_tick(start), tz=UTC)
    assert (tick.day, tick.hour, tick.minute, tick.second) == (2, 2, 30, 0)


def test_schedules_are_validated():
    with pytest.raises(wh.ConfigurationError):
        wh.Schedule("job", cron="* * * * *")
    with pytest.raises(ValueError, match="exactly one"):
        wh.Schedule("job")
    with pytest.raises(ValueError, match="positive"):
        wh.Schedule("job", interval=0)


def test_registering_cron_and_every_creates_schedules():
    app = wh.App("memory://")
    app.register("a", lambda job: None, cron="0 * * * * *")
    app.register("b", lambda job: None, every=30)
    app.every(5, "b", {"x": 1})
    assert [(s.name, s.cron, s.interval) for s in app.schedules] == [
        ("a", "0 * * * * *", None), ("b", None, 30), ("b", None, 5)]
    app.register("a", lambda job: None)  # re-registering without cron drops its schedule
    assert [s.name for s in app.schedules] == ["b", "b"]


def test_producer_fills_defaults_from_the_handler():
    app = wh.App("memory://")
    app.register("mail", lambda job: None, queue="mail", priority=4, timeout=9, unique=True)
    new = build_new_job(EnqueueRequest("mail", {"to": "a"}), app.registry, now=100.0)
    assert (new.queue, new.priority, new.timeout) == ("mail", 4, 9)
    assert new.unique_key == unique_key_for("mail", {"to": "a"})
    delayed = build_new_job(EnqueueRequest("mail", delay=5, unique=False), app.registry, now=100.0)
    assert (delayed.run_at, delayed.unique_key) == (105.0, None)
    unknown = build_new_job(EnqueueRequest("elsewhere"), app.registry)
    assert (unknown.queue, unknown.priority) == ("default", 0)


def test_unique_keys_ignore_key_order():
    assert unique_key_for("x", {"a": 1, "b": 2}) == unique_key_for("x", {"b": 2, "a": 1})
    assert unique_key_for("x", {"a": 1}) != unique_key_for("y", {"a": 1})


def test_enqueue_rejects_delay_and_at_together():
    app = wh.App("memory://")
    with pytest.raises(wh.ConfigurationError, match="not both"):
        build_new_job(EnqueueRequest("x", delay=1, at=5.0), app.registry)


def test_unsupported_url_lists_the_schemes():
    from workhorse.backends import create_backend

    with pytest.raises(wh.ConfigurationError, match=r"memory://, postgres://.*redis://.*sqlite://"):
        create_backend("mysql://localhost/db")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:6379/0?namespace=x", "redis://:***@host:6379/0"),
        ("postgresql://user:pw@host/db?schema=a", "postgresql://user:***@host/db"),
        ("sqlite:///relative.db", "sqlite:///relative.db"),
    ],
)
def test_urls_are_shown_without_passwords(url, shown):
    from workhorse.backends import redact_url

    assert redact_url(url) == shown
