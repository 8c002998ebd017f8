"""Connection -> client settings: defaults, extras, and errors that name the connection and field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError, config_from_connection

KEY = "sk-ant-test-DO-NOT-LEAK-1234567890"


@dataclass
class FakeConnection:
    """Only the four attributes the settings reader uses (no Airflow database needed)."""

    host: str | None = None
    password: str | None = KEY
    port: int | None = None
    extra_dejson: dict[str, Any] = field(default_factory=dict)


@pytest.mark.smoke
def test_defaults() -> None:
    config = config_from_connection("anthropix_default", FakeConnection())
    assert config.base_url == "https://api.anthropic.com"
    assert config.anthropic_version == "2026-10-21"
    assert (config.connect_timeout, config.read_timeout, config.max_retries) == (10.0, 60.0, 2)
    assert config.headers()["x-api-key"] == KEY


def test_extras_are_applied() -> None:
    conn = FakeConnection(
        host="http://127.0.0.1",
        port=8787,
        extra_dejson={
            "anthropic_version": "2023-06-01",
            "anthropic_beta": ["a-2026", "b-2026"],
            "workspace_id": "wrkspc_1",
            "timeout": [3, 30],
            "max_retries": 5,
            "proxies": {"https": "http://proxy:3128"},
        },
    )
    config = config_from_connection("c", conn)
    assert config.base_url == "http://127.0.0.1:8787"
    headers = config.headers()
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "a-2026,b-2026"
    assert headers["anthropic-workspace-id"] == "wrkspc_1"
    assert (config.connect_timeout, config.read_timeout, config.max_retries) == (3.0, 30.0, 5)
    assert config.proxies == {"https": "http://proxy:3128"}


def test_comma_separated_beta() -> None:
    config = config_from_connection(
        "c", FakeConnection(host="https://api.example.com", extra_dejson={"anthropic_beta": "x, y"})
    )
    assert config.base_url == "https://api.example.com"
    assert config.anthropic_beta == ("x", "y")
    assert config.connection_id == "c"


@pytest.mark.parametrize("host", ["127.0.0.1:8787", "localhost:8787/", "api.example.com"])
def test_host_without_scheme_is_a_settings_error_naming_the_fix(host: str) -> None:
    """Guessing https turned a local emulator into a TLS failure that read like a lost create."""
    with pytest.raises(ConnectionSettingsError) as info:
        config_from_connection("nightly_llm", FakeConnection(host=host))
    message = str(info.value)
    assert message.startswith("connection 'nightly_llm': host (Base URL)")
    assert "no scheme" in message
    bare = host.rstrip("/")
    assert f"http://{bare}" in message and f"https://{bare}" in message


@pytest.mark.parametrize(
    "host",
    [
        "http://user:s3cr3t-pw@127.0.0.1:8787",
        "https://sk-ant-in-the-host-0123@api.example.com",
        "http://user:s3cr3t-pw@127.0.0.1:notaport",
    ],
)
def test_userinfo_in_the_host_is_refused_without_echoing_it(host: str) -> None:
    with pytest.raises(ConnectionSettingsError) as info:
        config_from_connection("c", FakeConnection(host=host))
    message = str(info.value)
    assert message.startswith("connection 'c': host (Base URL)")
    assert "s3cr3t-pw" not in message and "sk-ant-in-the-host-0123" not in message
    assert "[redacted]" in message


@pytest.mark.parametrize(
    ("conn", "field_name"),
    [
        (FakeConnection(host="http://127.0.0.1\\@evil:1"), "host (Base URL)"),
        (FakeConnection(host="http://127.0.0.1.:8787 x"), "host (Base URL)"),
        (FakeConnection(host="http://h\u00f6st:1"), "host (Base URL)"),
        (FakeConnection(host="http://127.0.0.1:8787", port=9000), "port"),
        (FakeConnection(extra_dejson={"anthropic_beta": ["b\u0113ta"]}), "extra.anthropic_beta"),
        (FakeConnection(extra_dejson={"workspace_id": "w\nx"}), "extra.workspace_id"),
    ],
)
def test_values_that_cannot_be_sent_are_settings_errors(conn: FakeConnection, field_name: str) -> None:
    with pytest.raises(ConnectionSettingsError) as info:
        config_from_connection("c", conn)
    assert str(info.value).startswith(f"connection 'c': {field_name}")


def test_a_key_that_cannot_be_a_header_is_refused_without_echoing_it() -> None:
    key = "sk-ant-caf\u00e9-0123456789"
    with pytest.raises(ConnectionSettingsError) as info:
        config_from_connection("c", FakeConnection(password=key))
    assert str(info.value).startswith("connection 'c': password (API Key)")
    assert key not in str(info.value) and "caf" not in str(info.value)


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("conn", "field_name"),
    [
        (FakeConnection(password=None), "password (API Key)"),
        (FakeConnection(password="  "), "password (API Key)"),
        (FakeConnection(host="ftp://files.example.com"), "host (Base URL)"),
        (FakeConnection(host="http://"), "host (Base URL)"),
        (FakeConnection(host="https://api.anthropic.com/v1"), "host (Base URL)"),
        (FakeConnection(host="http://127.0.0.1:99999"), "host (Base URL)"),
        (FakeConnection(extra_dejson={"anthropic_version": "2024-01-01"}), "extra.anthropic_version"),
        (FakeConnection(extra_dejson={"max_retries": "many"}), "extra.max_retries"),
        (FakeConnection(extra_dejson={"timeout": "slow"}), "extra.timeout"),
        (FakeConnection(extra_dejson={"timeout": [1, 2, 3]}), "extra.timeout"),
        (FakeConnection(extra_dejson={"anthropic_beta": 5}), "extra.anthropic_beta"),
        (FakeConnection(extra_dejson={"proxies": "http://proxy"}), "extra.proxies"),
    ],
)
def test_bad_settings_name_connection_and_field(conn: FakeConnection, field_name: str) -> None:
    with pytest.raises(ConnectionSettingsError) as info:
        config_from_connection("nightly_llm", conn)
    message = str(info.value)
    assert message.startswith(f"connection 'nightly_llm': {field_name}")
    assert KEY not in message


@pytest.mark.smoke
def test_key_never_in_repr() -> None:
    config = config_from_connection("c", FakeConnection(extra_dejson={"proxies": {"https": "http://u:p@proxy"}}))
    for text in (repr(config), str(config), str(config.describe())):
        assert KEY not in text
        assert "u:p" not in text
    assert config.redactor()("proxy said http://u:p@proxy and " + KEY) == "proxy said http://u:p@proxy and [redacted]"
    secret = config_from_connection("c", FakeConnection(extra_dejson={"proxies": {"https": "http://u:pr0xy-pw@proxy"}}))
    assert secret.redactor()("auth pr0xy-pw failed") == "auth [redacted] failed"


def test_config_rejects_unknown_version_directly() -> None:
    with pytest.raises(ValueError, match="anthropic_version"):
        ClientConfig(api_key=KEY, anthropic_version="1999-01-01")
