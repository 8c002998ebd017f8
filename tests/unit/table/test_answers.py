"""AnswerReader's pause of the cyclic garbage collector: on while nothing is parsed, whatever happens.

Parsing a million answers with the collector on was several times slower in a task process
(its older generations hold Airflow's objects); the reader turns it off per block of lines and
must always turn it back on, and leave it off when the caller had it off.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator

import msgspec
import pytest

from airflow_provider_anthropix.table.answers import AnswerLayout, AnswerReader, InvalidOutputs

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
LINE = {"custom_id": "a", "result": {"type": "succeeded", "message": {"content": [{"type": "text", "text": "{}"}]}}}


@pytest.fixture
def collector() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_while_lines_are_parsed_and_on_after(
    collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    reader = AnswerReader(AnswerLayout(SCHEMA))
    parse = reader._parse
    monkeypatch.setattr(reader, "_parse", lambda text, stop: (seen.append(gc.isenabled()), parse(text, stop))[1])
    reader.read([json.dumps(LINE).encode() + b"\n"] * 3, batch_id="b")
    assert seen == [False, False, False]
    assert gc.isenabled()
    assert reader.finish().column("_result_type").to_pylist() == ["invalid_output"] * 3

    with pytest.raises(msgspec.DecodeError):
        reader.read([b"{broken\n"], batch_id="b")
    assert gc.isenabled()  # back on after a failure too

    finder = InvalidOutputs(SCHEMA)
    with pytest.raises(msgspec.DecodeError):
        list(finder.watch([json.dumps(LINE).encode() + b"\n{broken\n"]))
    assert gc.isenabled()


def test_a_collector_the_caller_turned_off_stays_off(collector: None) -> None:
    gc.disable()
    reader = AnswerReader(AnswerLayout(SCHEMA))
    reader.read([json.dumps(LINE).encode() + b"\n"], batch_id="b")
    assert not gc.isenabled()
