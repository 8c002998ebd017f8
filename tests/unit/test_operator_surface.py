"""One operator surface: every connection id is templated, and every path argument is resolved one way."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

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


WAITING = [(o.__module__, o.__name__) for o in OPERATORS if "deferrable" in inspect.signature(o.__init__).parameters]


def test_every_waiting_task_defers_by_airflows_default_deferrable() -> None:
    """One rule for all: ``deferrable`` defaults to ``[operators] default_deferrable`` (the job included)."""
    assert ("airflow_provider_anthropix.operators.job", "BatchJobOperator") in WAITING
    probe = (
        "import importlib, inspect, json, sys\n"
        "out = {}\n"
        "for module, name in json.loads(sys.argv[1]):\n"
        "    cls = getattr(importlib.import_module(module), name)\n"
        "    out[name] = inspect.signature(cls.__init__).parameters['deferrable'].default\n"
        "print(json.dumps(out))\n"
    )
    from airflow.sdk import conf

    here = conf.getboolean("operators", "default_deferrable", fallback=False)
    for _, name in WAITING:
        cls = {o.__name__: o for o in OPERATORS}[name]
        assert inspect.signature(cls.__init__).parameters["deferrable"].default is here, name
    for setting in (str(not here),):  # and the other way round, in a fresh interpreter
        env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": setting}
        done = subprocess.run(
            [sys.executable, "-c", probe, json.dumps(WAITING)], env=env, capture_output=True, text=True, check=True
        )
        defaults = json.loads(done.stdout.strip().splitlines()[-1])
        assert defaults == {name: setting == "True" for _, name in WAITING}, setting
