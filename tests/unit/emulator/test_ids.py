"""Message ids: the per-batch shortcut must give the ids :func:`message_id` gives (results stay byte-identical)."""

from __future__ import annotations

import random

from airflow_provider_anthropix.emulator.ids import MessageIds, _base62, _base62_21, message_id


def test_per_batch_ids_are_the_plain_functions_ids() -> None:
    ids = MessageIds(7, "msgbatch_011abc")
    for custom_id in ("a", "row-0000001", "caf\u00e9", "q" * 64):
        assert ids(custom_id) == message_id(7, "msgbatch_011abc", custom_id)
    assert MessageIds(8, "msgbatch_011abc")("a") != ids("a")


def test_the_unrolled_base62_is_the_loop() -> None:
    rng = random.Random(5)
    for bits in (0, 1, 62, 120, 126, 200):
        for _ in range(200):
            number = rng.getrandbits(bits) if bits else 0
            assert _base62_21(number) == _base62(number, 21)
