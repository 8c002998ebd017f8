"""What an export may delete: only its own file names, inside the destination, never recursively.

A ``_manifest.json`` found in the destination was maybe not written by us (a copy, an
older version, a hostile user): whatever it lists, the export must leave everything it
would not itself write where it is. Each case builds a destination with neighbours
(sibling files, a sub-folder, a parent folder holding other data) and checks every one
of them survives an export over it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api.models import RequestCounts
from airflow_provider_anthropix.io import MANIFEST_NAME, AtomicPublisher, ExportOptions, export_results
from airflow_provider_anthropix.io.export import all_output_names
from airflow_provider_anthropix.io.publish import is_staging_name
from tests.support.payloads import chunked, counts_of, mixed_results

DATA = mixed_results(50)
COUNTS = RequestCounts(**counts_of(DATA))

#: Names a manifest could list to make a careless export delete what is not its own.
HOSTILE_NAMES = [
    "..",
    ".",
    "../sibling",
    "../sibling.txt",
    "/abs",
    "sub/x",
    "sub",
    "*",
    "**",
    "",
    "results.jsonl/..",
    "..\\sibling",
    "keep.txt",
    "keep-folder",
    "_tmp_not-ours",
    "%2e%2e",
    "results.jsonl\x00",
]


def export(dest: Path, **options: Any) -> None:
    export_results(
        iter(chunked(DATA, 512)),
        ObjectStoragePath(f"file://{dest}"),
        batch_id="msgbatch_test",
        expected=COUNTS,
        options=ExportOptions(**options),
    )


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> content), folders included as ``<dir>``."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = "<dir>" if path.is_dir() else path.read_bytes().decode(errors="replace")
    return found


def neighbourhood(tmp_path: Path) -> Path:
    """A parent folder with a sibling file and folder, and a destination with foreign objects."""
    parent = tmp_path / "parent"
    (parent / "sibling").mkdir(parents=True)
    (parent / "sibling" / "x").write_text("sibling data")
    (parent / "sibling.txt").write_text("sibling file")
    dest = parent / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "sub" / "x").write_text("nested data")
    (dest / "keep-folder").mkdir()
    (dest / "keep-folder" / "inner.txt").write_text("inner")
    (dest / "keep.txt").write_text("a user's file")
    (tmp_path / "abs").write_text("outside the destination")
    return dest


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[repr(n) for n in HOSTILE_NAMES])
def test_a_hostile_previous_manifest_deletes_nothing_outside_the_export(tmp_path: Path, name: str) -> None:
    dest = neighbourhood(tmp_path)
    manifest = {"manifest_version": 1, "files": [{"name": name}, {"name": name.replace("/abs", str(tmp_path / "abs"))}]}
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest))
    before = tree(tmp_path)
    export(dest)
    after = tree(tmp_path)
    # Everything that was there is still there, unchanged, except the manifest (replaced).
    lost = {key: value for key, value in before.items() if key not in after}
    changed = {key for key, value in before.items() if key in after and after[key] != value}
    assert lost == {}, f"the export deleted {sorted(lost)}"
    assert changed == {f"parent/dest/{MANIFEST_NAME}"}
    assert (dest / "results.jsonl").read_bytes() == DATA


@pytest.mark.parametrize(
    "files",
    [
        "not a list",
        [None, 3, ["x"], {"name": None}, {"name": 5}, {"nom": ".."}],
        {"name": ".."},
    ],
    ids=["string", "junk-entries", "a-dict"],
)
def test_a_malformed_previous_manifest_is_ignored(tmp_path: Path, files: Any) -> None:
    dest = neighbourhood(tmp_path)
    (dest / MANIFEST_NAME).write_text(json.dumps({"files": files}))
    before = set(tree(tmp_path))
    export(dest)
    assert before <= set(tree(tmp_path))


def test_a_manifest_that_is_not_json_does_not_stop_the_export(tmp_path: Path) -> None:
    dest = neighbourhood(tmp_path)
    (dest / MANIFEST_NAME).write_bytes(b"\xff not json")
    export(dest)
    assert json.loads((dest / MANIFEST_NAME).read_text())["batch_id"] == "msgbatch_test"
    assert (dest / "keep.txt").exists()


def test_own_outputs_of_an_earlier_export_are_replaced_even_without_a_manifest(tmp_path: Path) -> None:
    """Stale objects are found by their names, not through the manifest (which may be gone or foreign)."""
    dest = neighbourhood(tmp_path)
    for name in ("results.jsonl.gz", "succeeded.jsonl", "errored.parquet"):
        (dest / name).write_text("stale")
    export(dest)
    names = sorted(p.name for p in dest.iterdir() if p.is_file())
    assert names == [MANIFEST_NAME, "keep.txt", "results.jsonl"]


def test_an_own_name_that_is_a_folder_is_left_alone(tmp_path: Path) -> None:
    dest = neighbourhood(tmp_path)
    (dest / "errored.jsonl").mkdir()
    (dest / "errored.jsonl" / "precious").write_text("not ours")
    export(dest)
    assert (dest / "errored.jsonl" / "precious").read_text() == "not ours"


def test_the_names_an_export_can_remove_are_what_it_writes() -> None:
    names = all_output_names()
    for options in (
        ExportOptions(),
        ExportOptions(compression="gzip"),
        ExportOptions(output_format="parquet"),
        ExportOptions(split_by_result_type=True),
        ExportOptions(split_by_result_type=True, compression="gzip"),
        ExportOptions(split_by_result_type=True, output_format="parquet"),
    ):
        for stem in ("results", "succeeded", "errored", "canceled", "expired", "other"):
            assert options.file_name(stem) in names
    assert all("/" not in n and "\\" not in n and not n.startswith((".", "_")) for n in names)


def test_only_exact_staging_folders_are_removed(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    ours = dest / "_tmp_0123456789ab"
    ours.mkdir()
    (ours / "results.jsonl").write_text("left by a killed export")
    lookalikes = ["_tmp_", "_tmp_..", "_tmp_0123456789abc", "_tmp_XYZ", "_tmp_backup", "_tmp_0123456789ab.bak"]
    for name in lookalikes:
        (dest / name).mkdir()
        (dest / name / "data").write_text("user data")
    export(dest)
    assert not ours.exists()
    for name in lookalikes:
        assert (dest / name / "data").read_text() == "user data", name
    assert is_staging_name("_tmp_0123456789ab")
    assert not any(is_staging_name(name) for name in lookalikes)


@pytest.mark.parametrize("token", ["../..", "", "..", "a/b", "x" * 13, "ABCDEF012345"])
def test_a_staging_token_must_have_the_exact_shape(tmp_path: Path, token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        AtomicPublisher(ObjectStoragePath(f"file://{tmp_path}"), token=token)


def test_commit_refuses_to_remove_names_that_are_not_plain(tmp_path: Path) -> None:
    publisher = AtomicPublisher(ObjectStoragePath(f"file://{tmp_path / 'd'}"))
    publisher.prepare()
    with pytest.raises(ValueError, match="plain"):
        publisher.commit([], {"files": []}, remove=[".."])
    publisher.abort()


def test_a_folder_where_an_output_goes_fails_the_export_and_is_kept(tmp_path: Path) -> None:
    from airflow_provider_anthropix.io import DestinationError

    dest = neighbourhood(tmp_path)
    (dest / "results.jsonl").mkdir()
    (dest / "results.jsonl" / "precious").write_text("not ours")
    with pytest.raises(DestinationError, match=r"results\.jsonl is a folder"):
        export(dest)
    assert (dest / "results.jsonl" / "precious").read_text() == "not ours"
    assert not (dest / MANIFEST_NAME).exists()
    assert not [p for p in dest.iterdir() if p.name.startswith("_tmp_")]


@pytest.mark.parametrize(
    ("scheme", "package"),
    [
        ("gs", "apache-airflow-providers-google"),
        ("gcs", "apache-airflow-providers-google"),
        ("abfs", "apache-airflow-providers-microsoft-azure"),
        ("az", "apache-airflow-providers-microsoft-azure"),
        ("oss", "apache-airflow-providers-alibaba"),
        ("s3", "apache-airflow-providers-amazon[s3fs]"),
    ],
)
def test_no_filesystem_names_the_package_to_install(scheme: str, package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.sdk.io

    from airflow_provider_anthropix.io import DestinationError
    from airflow_provider_anthropix.io.publish import check_protocol

    monkeypatch.setattr(airflow.sdk.io, "has_fs", lambda protocol: False)

    class Path:
        protocol = scheme

    with pytest.raises(DestinationError) as info:
        check_protocol(Path())  # type: ignore[arg-type]
    assert f"no filesystem is registered for {scheme}:// destinations; pip install '{package}'" in str(info.value)


def test_the_writability_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    from airflow_provider_anthropix.io.publish import check_destination_writable

    check_destination_writable(ObjectStoragePath(f"file://{tmp_path / 'new' / 'folder'}"))
    assert list((tmp_path / "new" / "folder").iterdir()) == []
