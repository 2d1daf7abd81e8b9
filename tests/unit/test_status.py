import pytest

import workhorse as wh
from workhorse.status import outcome_of


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (wh.Status.SUCCESS, wh.Outcome.DONE),
        (wh.Status.NO_RESPONSE, wh.Outcome.DONE),
        (wh.Status.BAD_REQUEST, wh.Outcome.DEAD),
        (wh.Status.UNAUTHORIZED, wh.Outcome.DEAD),
        (wh.Status.FORBIDDEN, wh.Outcome.DEAD),
        (wh.Status.TIMEOUT, wh.Outcome.RETRY),
        (wh.Status.TOO_MANY_REQUESTS, wh.Outcome.RETRY),
        (wh.Status.INTERNAL_ERROR, wh.Outcome.RETRY),
        (wh.Status.UNAVAILABLE, wh.Outcome.RETRY),
        (wh.Status.CANCELLED, wh.Outcome.CANCELLED),
        (wh.Status.UNKNOWN, wh.Outcome.RETRY),
    ],
)
def test_each_status_maps_to_the_designed_outcome(status, outcome):
    assert outcome_of(status) is outcome
    assert status.outcome is outcome


def test_status_values_are_the_http_codes():
    assert [int(s) for s in wh.Status] == [-1, 200, 400, 401, 403, 408, 429, 444, 499, 500, 503]


@pytest.mark.parametrize(("code", "expected"), [(201, 200), (404, 400), (502, 500), (403, 403)])
def test_unlisted_codes_coerce_to_their_class(code, expected):
    assert wh.Status.coerce(code) == expected


def test_job_error_carries_its_status_and_message():
    err = wh.JobError(403, "account closed")
    assert err.status is wh.Status.FORBIDDEN
    assert str(err) == "403 account closed"
    assert wh.JobError(wh.Status.UNAVAILABLE).message == "unavailable"
