"""Result streams' pieces that need no store: Result from a feed's FinishedJob, Drop."""

from __future__ import annotations

import workhorse as wh
from workhorse.backends.base import FinishedJob


def finished(**fields: object) -> FinishedJob:
    base: dict[str, object] = {
        "id": "j1", "name": "task", "queue": "default", "state": wh.State.SUCCEEDED,
        "status": 200, "result": b'{"a": [1, 2]}', "error": None, "attempt": 2,
        "finished_at": 1700000000.25}
    return FinishedJob(**{**base, **fields})  # type: ignore[arg-type]


def test_a_result_decodes_its_value_and_names_its_status() -> None:
    result = wh.Result.from_finished(finished())
    assert result == wh.Result(job_id="j1", name="task", queue="default",
                               state=wh.State.SUCCEEDED, status=wh.Status.SUCCESS,
                               result={"a": [1, 2]}, error=None, attempt=2,
                               finished_at=1700000000.25)
    assert result.status is wh.Status.SUCCESS and result.ok


def test_a_status_code_workhorse_does_not_name_stays_an_int() -> None:
    result = wh.Result.from_finished(finished(status=299, result=None))
    assert result.status == 299 and not isinstance(result.status, wh.Status)
    assert result.result is None


def test_an_undecodable_stored_result_reads_as_none() -> None:
    assert wh.Result.from_finished(finished(result=b"{not json")).result is None


def test_drop_policies_by_value() -> None:
    assert wh.Drop("newest") is wh.Drop.NEWEST and wh.Drop("oldest") is wh.Drop.OLDEST
