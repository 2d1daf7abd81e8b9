import pytest

import workhorse as wh
from workhorse.options import parse_rate_limit


async def noop(job: wh.Job) -> None:
    return None


def test_defaults_are_applied():
    app = wh.App("memory://")
    reg = app.register("noop", noop)
    assert reg.options.queue == "default"
    assert reg.options.retries == 3
    assert reg.options.timeout is None
    assert reg.options.backoff(1) <= 1.0


def test_valid_options_are_kept():
    app = wh.App("memory://")
    reg = app.register("noop", noop, queue="mail", retries=5, timeout=30, priority=10,
                       max_concurrency=2, rate_limit="20/s", cron="0 */5 * * * *",
                       backoff=wh.exponential(base=1, cap=300))
    assert reg.options.rate_limit.per_second == 20
    assert reg.options.cron == "0 */5 * * * *"
    assert reg.options.max_concurrency == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": -1}, "timeout must be a positive number"),
        ({"cron": "* * * * *"}, "not a valid 6-field cron"),
        ({"cron": "99 * * * * *"}, "not a valid 6-field cron"),
        ({"retires": 3}, "unknown option 'retires'.*did you mean 'retries'"),
        ({"retries": -1}, "retries must be an int >= 0"),
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1"),
        ({"rate_limit": "fast"}, "rate_limit 'fast' is not of the form"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"backoff": 3}, "backoff must be callable"),
        ({"every": 0}, "every must be a positive number"),
    ],
)
def test_invalid_options_fail_at_registration(options, message):
    app = wh.App("memory://")
    with pytest.raises(wh.ConfigurationError, match=message):
        app.register("noop", noop, **options)
    assert "noop" not in app.registry


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("20/s", 20), ("120/m", 2), ("5/10s", 0.5), ("3600/hour", 1), ("1.5/sec", 1.5)],
)
def test_rate_limits_parse(text, per_second):
    assert parse_rate_limit(text).per_second == pytest.approx(per_second)


def test_decorator_uses_function_name_by_default():
    app = wh.App("memory://")

    @app.handler()
    async def resize_image(job: wh.Job) -> None:
        return None

    assert "resize_image" in app.registry


def test_exponential_backoff_is_capped_and_grows():
    backoff = wh.exponential(base=1, cap=10, jitter=False)
    assert [backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    jittered = wh.exponential(base=4, cap=100)
    assert all(2 <= jittered(1) <= 4 for _ in range(50))
    assert wh.constant(3)(9) == 3


def test_app_url_defaults(monkeypatch):
    monkeypatch.delenv("WORKHORSE_URL", raising=False)
    assert wh.App().url == "sqlite:///workhorse.db"
    monkeypatch.setenv("WORKHORSE_URL", "memory://")
    assert wh.App().url == "memory://"
