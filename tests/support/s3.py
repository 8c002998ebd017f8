"""An S3 API server on loopback (moto in server mode) and an Airflow ``aws`` connection to it, as pytest fixtures.

The store is reached through an Airflow connection of type ``aws`` (from the environment)
whose extras point ``endpoint_url`` at the local server, exactly as a user would point
Airflow at MinIO or another S3-compatible store. Import the fixtures into a test module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

BUCKET = "anthropix-results"
CONN_ID = "anthropix_fetch_test_s3"


@pytest.fixture(scope="session")
def s3_url() -> Iterator[str]:
    """One server for the whole session: Airflow caches a store's filesystem per connection id,
    so a second server on another port would leave later modules talking to a stopped one."""
    moto_server = pytest.importorskip("moto.server")
    # Port 0: the server binds a free port itself (no window for another process to take it).
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client for the test server, the bucket, and the Airflow connection in the environment."""
    import boto3

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": s3_url, "region_name": "us-east-1"},
            }
        ),
    )
    client = boto3.client(
        "s3",
        endpoint_url=s3_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    buckets = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
    if BUCKET not in buckets:
        client.create_bucket(Bucket=BUCKET)
    return client
