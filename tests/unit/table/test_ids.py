"""Row keys to custom_ids: valid ones as they are, others derived stably and kept apart by type."""

from __future__ import annotations

from airflow_provider_anthropix.table.ids import custom_id_for


def test_keys_map_to_custom_ids_stably_and_apart() -> None:
    assert custom_id_for("plain_id-1") == "plain_id-1"
    derived = [custom_id_for(k) for k in ("with space", "x" * 65, 7, "7", 7.0, "ünï")]
    assert all(d.startswith("k-") and len(d) == 42 for d in derived[:2])
    assert custom_id_for("7") == "7"  # a valid string key is itself
    assert len(set(derived)) == len(derived)  # 7 (int), "7" and 7.0 stay apart
    assert custom_id_for("with space") == derived[0]  # stable
