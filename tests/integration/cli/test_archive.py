"""``anthropix batches archive`` against the emulator: batches of different ages, file:// and s3://.

The emulator's clock is moved forward between creates, so one key holds a batch whose
results are gone (32 days old), one about to lose them (27 days), older and newer ones and
one still running. The archive reckons ages from :func:`io.archive.current_time`, pointed at
the emulator's clock here (the batches' ``created_at`` are in the emulator's time).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pendulum
import pytest

from airflow_provider_anthropix.cli import main
from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.io import archive
from tests.support.s3 import BUCKET, CONN_ID

DAY = 86_400


@dataclass
class Aged:
    """Batch ids by age: ``gone`` 32 d (results archived by the API), ``soon`` 27 d (expire in < 3 d),
    ``old`` 22 d, ``mid`` 7 d, ``new`` 1 h, ``running`` still processing."""

    gone: str
    soon: str
    old: str
    mid: str
    new: str
    running: str

    def ended_alive(self) -> set[str]:
        return {self.soon, self.old, self.mid, self.new}


def _create(http: httpx.Client, n: int, tag: str) -> str:
    params = {"model": "claude-haiku-4-5", "max_tokens": 16}
    body = {
        "requests": [
            {"custom_id": f"{tag}-{i}", "params": {**params, "messages": [{"role": "user", "content": f"{tag} {i}"}]}}
            for i in range(n)
        ]
    }
    response = http.post("/v1/messages/batches", json=body)
    response.raise_for_status()
    return str(response.json()["id"])


@pytest.fixture
def aged(emulator: EmulatorHandle, emulator_http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> Aged:
    monkeypatch.setattr(archive, "current_time", lambda: pendulum.from_timestamp(emulator.app.clock.now(), tz="UTC"))
    gone = _create(emulator_http, 2, "gone")
    emulator.advance(5 * DAY)
    soon = _create(emulator_http, 3, "soon")
    emulator.advance(5 * DAY)
    old = _create(emulator_http, 4, "old")
    emulator.advance(15 * DAY)
    mid = _create(emulator_http, 5, "mid")
    emulator.advance(7 * DAY)
    new = _create(emulator_http, 6, "new")
    emulator.advance(3600)
    emulator.config.processing_seconds = 10 * 3600
    running = _create(emulator_http, 1, "running")
    return Aged(gone=gone, soon=soon, old=old, mid=mid, new=new, running=running)


@pytest.fixture
def base(emulator: EmulatorHandle, emulator_api_key: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", emulator_api_key)
    return ["--base-url", emulator.url]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def archive_json(dest: str, *flags: str) -> tuple[int, dict[str, Any], str]:
    status, out, err = run("batches", "archive", "--to", dest, "--json", *flags)
    assert out, err
    return status, json.loads(out), err


def by_status(report: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for entry in report["batches"]:
        found.setdefault(entry["status"], set()).add(entry["batch_id"])
    return found


def served(http: httpx.Client, batch_id: str) -> bytes:
    return http.get(f"/v1/messages/batches/{batch_id}/results").content


def results_calls(emulator: EmulatorHandle) -> int:
    return int(emulator.stats()["calls"].get("results", 0))


# -- file:// ---------------------------------------------------------------------------------


@pytest.mark.smoke
def test_archive_exports_each_unarchived_batch_once_then_nothing(
    aged: Aged, emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str], tmp_path: Path
) -> None:
    dest = tmp_path / "archive"
    status, report, err = archive_json(str(dest), *base)
    assert status == 0, err
    assert by_status(report) == {
        "exported": aged.ended_alive(),
        "expired": {aged.gone},
        "not_ended": {aged.running},
    }
    assert report["counts"] == {
        "exported": 4,
        "already_archived": 0,
        "expiring_soon": 1,
        "expired": 1,
        "failed": 0,
        "not_ended": 1,
        "too_recent": 0,
    }
    assert [e["batch_id"] for e in report["batches"] if e["expiring_soon"]] == [aged.soon]
    warning = next(line for line in err.splitlines() if aged.soon in line and "expire in" in line)
    assert warning.startswith("anthropix: warning: ") and "exported now" in warning
    for batch_id in aged.ended_alive():
        folder = dest / batch_id
        assert sorted(p.name for p in folder.iterdir()) == ["_manifest.json", "results.jsonl"]
        assert (folder / "results.jsonl").read_bytes() == served(emulator_http, batch_id)
        assert json.loads((folder / "_manifest.json").read_text())["batch_id"] == batch_id
    assert not (dest / aged.gone).exists() and not (dest / aged.running).exists()
    gone = next(e for e in report["batches"] if e["batch_id"] == aged.gone)
    assert "archived by the API" in gone["note"]

    calls = results_calls(emulator)
    status, again, err = archive_json(f"file://{dest}", *base)
    assert status == 0, err
    assert by_status(again) == {
        "already_archived": aged.ended_alive(),
        "expired": {aged.gone},
        "not_ended": {aged.running},
    }
    assert again["counts"]["exported"] == 0 and again["counts"]["expiring_soon"] == 0
    assert results_calls(emulator) == calls  # not one download
    assert "warning" not in err


def test_older_than_selects_by_age_and_the_table_sums_up(
    aged: Aged, emulator: EmulatorHandle, base: list[str], tmp_path: Path
) -> None:
    dest = str(tmp_path / "archive")
    status, report, _ = archive_json(dest, "--older-than", "20d", *base)
    assert status == 0
    assert by_status(report) == {"exported": {aged.soon, aged.old}, "expired": {aged.gone}}
    assert report["counts"]["too_recent"] == 3 and report["older_than_seconds"] == 20 * DAY
    status, out, _ = run("batches", "archive", "--to", dest, *base)
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("msgbatch_")}
    assert "already archived" in rows[aged.soon] and "already archived" in rows[aged.old]
    assert "exported" in rows[aged.mid] and "exported" in rows[aged.new]
    assert "EXPIRED" in rows[aged.gone] and "not ended" in rows[aged.running]
    assert f"{aged.gone}: results archived by the API at" in out
    assert "2 exported, 2 already archived, 0 expiring soon, 1 expired, 1 not ended (6 batches listed)" in out
    assert run("batches", "archive", "--to", dest, "--older-than", "20 days", *base)[0] == 2
    assert run("batches", "archive", "--to", dest, "--older-than", "36h", *base)[0] == 0


def _manifest(batch_id: str, files: list[dict[str, Any]], **extra: Any) -> str:
    return json.dumps({"batch_id": batch_id, "complete": True, "files": files, "lines": 999, **extra})


def test_a_manifest_that_proves_nothing_is_exported_over(
    aged: Aged, emulator_http: httpx.Client, base: list[str], tmp_path: Path
) -> None:
    dest = tmp_path / "archive"
    planted = {
        # names another batch (a copied folder, or a hostile one), with a real file beside it
        aged.old: (_manifest(aged.mid, [{"name": "results.jsonl", "size": 3}]), b"abc"),
        aged.mid: ("{not json", b""),
        # the right id, but the file it lists is not there at its size
        aged.new: (_manifest(aged.new, [{"name": "results.jsonl", "size": 10_000}]), b"short"),
        # the right id, but a file name that climbs out of the folder
        aged.soon: (_manifest(aged.soon, [{"name": "../../etc/passwd", "size": 1}]), b""),
    }
    for batch_id, (manifest, data) in planted.items():
        (dest / batch_id).mkdir(parents=True)
        (dest / batch_id / "_manifest.json").write_text(manifest)
        if data:
            (dest / batch_id / "results.jsonl").write_bytes(data)
    status, report, err = archive_json(str(dest), *base)
    assert status == 0, err
    assert by_status(report)["exported"] == aged.ended_alive()
    assert f"names batch '{aged.mid}', not {aged.old}" in err
    assert "is not valid JSON" in err and "has 5 bytes, not the 10000" in err
    assert "a file name that the export does not write" in err
    for batch_id in aged.ended_alive():
        assert json.loads((dest / batch_id / "_manifest.json").read_text())["batch_id"] == batch_id
        assert (dest / batch_id / "results.jsonl").read_bytes() == served(emulator_http, batch_id)
    # An incomplete export of the right batch proves nothing either.
    manifest = json.loads((dest / aged.old / "_manifest.json").read_text())
    (dest / aged.old / "_manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    status, report, _ = archive_json(str(dest), *base)
    assert by_status(report)["exported"] == {aged.old}


def test_a_batch_that_fails_does_not_stop_the_others_and_sets_the_status(
    aged: Aged, emulator: EmulatorHandle, emulator_api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "anthropix", "password": emulator_api_key, "host": emulator.url, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_CLI_ARCHIVE", json.dumps(conn))
    emulator.add_fault("status", endpoint="results", status=503, count=1)  # the first download (newest: new)
    dest = str(tmp_path / "archive")
    status, report, err = archive_json(dest, "--conn-id", "cli_archive")
    assert status == 5, err  # API trouble, as for any other command
    assert by_status(report)["failed"] == {aged.new}
    assert by_status(report)["exported"] == {aged.soon, aged.old, aged.mid}
    assert "archive incomplete: 1 of 6 batches could not be archived; the first, " + aged.new in err
    assert not (Path(dest) / aged.new / "_manifest.json").exists()
    status, report, err = archive_json(dest, "--conn-id", "cli_archive")
    assert status == 0, err
    assert by_status(report)["exported"] == {aged.new}


def test_refusals_before_anything_is_listed(emulator: EmulatorHandle, base: list[str], tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    status, _, err = run("batches", "archive", "--to", str(link), *base)
    assert status == 2 and "--to" in err and "symbolic link" in err
    status, _, err = run("batches", "archive", "--to", "nosuchscheme://bucket/x", *base)
    assert status == 8 and "nosuchscheme" in err
    assert run("batches", "archive", *base)[0] == 2  # --to is required
    assert emulator.stats()["calls"].get("list", 0) == 0


def test_relative_destination_and_empty_key(
    emulator: EmulatorHandle, base: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, _ = run("batches", "archive", "--to", "rel", *base)
    assert status == 0
    assert "no batches to archive" in out and f"in file://{tmp_path}/rel" in out
    assert os.path.isdir(tmp_path / "rel")


# -- s3:// -----------------------------------------------------------------------------------


def _keys(s3: Any, prefix: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"][len(prefix) :] for item in listing.get("Contents", []))


def test_archive_to_s3_once_then_nothing_and_a_planted_manifest_is_not_proof(
    aged: Aged, emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str], s3: Any
) -> None:
    prefix = "archive-cli/"
    # A manifest naming another batch, planted where the oldest live batch would go.
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}{aged.soon}/_manifest.json", Body=_manifest(aged.old, []).encode())
    dest = f"s3://{BUCKET}/{prefix.rstrip('/')}"
    status, report, err = archive_json(dest, "--destination-conn-id", CONN_ID, *base)
    assert status == 0, err
    assert by_status(report) == {
        "exported": aged.ended_alive(),
        "expired": {aged.gone},
        "not_ended": {aged.running},
    }
    assert f"names batch '{aged.old}', not {aged.soon}" in err
    expected = sorted(f"{b}/{name}" for b in aged.ended_alive() for name in ("_manifest.json", "results.jsonl"))
    assert _keys(s3, prefix) == expected
    for batch_id in aged.ended_alive():
        body = s3.get_object(Bucket=BUCKET, Key=f"{prefix}{batch_id}/results.jsonl")["Body"].read()
        assert body == served(emulator_http, batch_id)
    entry = next(e for e in report["batches"] if e["batch_id"] == aged.soon)
    assert entry["folder"] == f"s3://{BUCKET}/archive-cli/{aged.soon}" and entry["expiring_soon"] is True

    calls = results_calls(emulator)
    status, again, err = archive_json(dest, "--destination-conn-id", CONN_ID, *base)
    assert status == 0, err
    assert by_status(again)["already_archived"] == aged.ended_alive()
    assert again["counts"]["exported"] == 0 and results_calls(emulator) == calls
    assert _keys(s3, prefix) == expected
