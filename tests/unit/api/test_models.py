"""Parsing the API's objects: every field, nulls, and fields we do not know yet."""

from __future__ import annotations

import pendulum
import pytest

from airflow_provider_anthropix.api.models import BatchPage, DeletedMessageBatch, MessageBatch, RequestCounts

ENDED = {
    "id": "msgbatch_01",
    "type": "message_batch",
    "processing_status": "ended",
    "request_counts": {"processing": 0, "succeeded": 7, "errored": 2, "canceled": 1, "expired": 0},
    "created_at": "2026-11-24T01:00:00.123456Z",
    "expires_at": "2026-11-25T01:00:00.123456Z",
    "ended_at": "2026-11-24T01:20:00Z",
    "cancel_initiated_at": None,
    "archived_at": None,
    "results_url": "https://api.anthropic.com/v1/messages/batches/msgbatch_01/results",
    "a_field_from_the_future": {"x": 1},
}


@pytest.mark.smoke
def test_message_batch_parses_every_field() -> None:
    batch = MessageBatch.from_dict(ENDED)
    assert batch.id == "msgbatch_01"
    assert batch.is_ended
    assert batch.request_counts == RequestCounts(0, 7, 2, 1, 0)
    assert batch.request_counts.total == 10
    assert batch.request_counts.done == 10
    assert batch.created_at == pendulum.datetime(2026, 11, 24, 1, 0, 0, 123456)
    assert batch.expires_at is not None and batch.created_at is not None
    assert (batch.expires_at - batch.created_at).in_hours() == 24
    assert batch.ended_at == pendulum.datetime(2026, 11, 24, 1, 20)
    assert batch.cancel_initiated_at is None
    assert batch.archived_at is None
    assert batch.results_url and batch.results_url.endswith("/results")


def test_unknown_fields_are_kept_and_round_trip() -> None:
    batch = MessageBatch.from_dict(ENDED)
    assert batch.raw["a_field_from_the_future"] == {"x": 1}
    assert batch.to_dict() == ENDED


def test_in_progress_batch_with_missing_fields() -> None:
    batch = MessageBatch.from_dict(
        {"id": "msgbatch_02", "processing_status": "in_progress", "request_counts": {"processing": 5}}
    )
    assert not batch.is_ended
    assert batch.request_counts.total == 5
    assert batch.request_counts.done == 0
    assert batch.results_url is None
    assert batch.ended_at is None


def test_not_a_batch_is_rejected_with_its_content() -> None:
    with pytest.raises(ValueError, match="not a message batch"):
        MessageBatch.from_dict({"type": "error"})


def test_page_and_deleted() -> None:
    page = BatchPage.from_dict({"data": [ENDED], "has_more": True, "first_id": "msgbatch_01", "last_id": "msgbatch_01"})
    assert page.has_more and page.data[0].id == "msgbatch_01" and page.last_id == "msgbatch_01"
    empty = BatchPage.from_dict({"data": [], "has_more": False, "first_id": None, "last_id": None})
    assert empty.data == [] and empty.first_id is None
    deleted = DeletedMessageBatch.from_dict({"id": "msgbatch_01", "type": "message_batch_deleted"})
    assert deleted.id == "msgbatch_01"


def test_rebuilt_dict_when_built_by_hand() -> None:
    batch = MessageBatch(id="b", processing_status="ended", request_counts=RequestCounts(succeeded=1))
    assert batch.to_dict()["request_counts"]["succeeded"] == 1
