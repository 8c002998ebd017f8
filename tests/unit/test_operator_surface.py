"""One operator surface: every connection id is templated, and every path argument is resolved one way."""

from __future__ import annotations

import inspect

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_anthropix.operators.cancel import CancelBatchOperator
from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.operators.job import BatchJobOperator
from airflow_provider_anthropix.operators.paths import storage_path
from airflow_provider_anthropix.operators.split import SplitRequestsOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor

OPERATORS = [
    CreateBatchOperator,
    FetchBatchResultsOperator,
    BatchJobOperator,
    SplitRequestsOperator,
    CancelBatchOperator,
    BatchEndedSensor,
]


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda o: o.__name__)
def test_every_connection_id_argument_is_templated(operator: type) -> None:
    conn_ids = [name for name in inspect.signature(operator.__init__).parameters if name.endswith("conn_id")]
    assert conn_ids, f"{operator.__name__} takes no connection id?"
    missing = [name for name in conn_ids if name not in operator.template_fields]
    assert not missing, f"{operator.__name__} does not template {missing}"


@pytest.mark.parametrize("what", ["requests_path", "destination", "work_prefix"])
def test_a_relative_path_is_refused_naming_the_argument(what: str) -> None:
    with pytest.raises(AirflowFailException, match=rf"unusable {what} prompts/x.jsonl: a relative path"):
        storage_path("prompts/x.jsonl", None, what)


def test_the_create_resolves_its_input_as_every_operator_does() -> None:
    create = CreateBatchOperator(task_id="c", requests_path="prompts/x.jsonl")
    with pytest.raises(AirflowFailException, match=r"unusable requests_path prompts/x\.jsonl: a relative path"):
        create._requests_path()
