"""``AIRFLOW_CONN_<ID>`` read without Airflow: the same fields as Airflow's own parser, and no key in any error."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from airflow_provider_anthropix.cli.env_connection import (
    EnvConnection,
    env_var_name,
    parse_connection,
    read_env_connection,
)
from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError, config_from_connection

KEY = "sk-ant-api03-Zx9/q+w=Lp%7:@#?&ü"  # every character a URI has to escape, and one that is not ASCII
#: A key the hook accepts in a header (printable ASCII), with the characters a URI has to escape.
SENDABLE_KEY = "sk-ant-api03-Zx9/q+w=Lp%7:@#?&"

#: Values Airflow reads; each is parsed by Airflow's task SDK and by ours, field by field.
SAME_AS_AIRFLOW = [
    json.dumps({"conn_type": "anthropix", "password": KEY, "host": "http://127.0.0.1:8787"}),
    json.dumps({"conn_type": "anthropix", "password": KEY, "host": "https://gw.internal", "port": "8443"}),
    json.dumps({"conn_type": "anthropix", "password": KEY, "extra": {"max_retries": 0, "anthropic_beta": ["a", "b"]}}),
    json.dumps({"conn_type": "anthropix", "password": KEY, "extra": json.dumps({"timeout": [3, 60]})}),
    json.dumps({"conn_type": "anthropix", "login": "me", "password": KEY, "schema": "s", "description": "d"}),
    "  " + json.dumps({"conn_type": "anthropix", "password": KEY}) + "\n",
    f"anthropix://:{quote(KEY, safe='')}@api.anthropic.com",
    f"anthropix://:{quote(KEY, safe='')}@{quote('http://127.0.0.1', safe='')}:8787",
    f"anthropix://http://:{quote(KEY, safe='')}@127.0.0.1:8787/?max_retries=0&anthropic_beta=a%2Cb",
    f"anthropix://https://:{quote(KEY, safe='')}@gw.internal:8443/schema?"
    + "__extra__="
    + quote(json.dumps({"anthropic_version": "2023-06-01", "proxies": {"https": "http://p:3128"}}), safe=""),
    f"anthropix://user:{quote(KEY, safe='')}@host/path%2Fschema?timeout=30&empty=",
    "anthropix://",
]


def airflow_fields(conn_id: str, value: str) -> dict[str, Any]:
    from airflow.sdk.definitions.connection import Connection

    text = value.strip()
    conn = Connection.from_json(text, conn_id=conn_id) if text[0] == "{" else Connection.from_uri(text, conn_id)
    return {
        "conn_type": conn.conn_type,
        "host": conn.host or None,
        "login": conn.login,
        "password": conn.password,
        "schema": conn.schema or None,
        "port": conn.port,
        "extra": conn.extra_dejson,
    }


def our_fields(conn: EnvConnection) -> dict[str, Any]:
    return {
        "conn_type": conn.conn_type,
        "host": conn.host or None,
        "login": conn.login,
        "password": conn.password,
        "schema": conn.schema or None,
        "port": conn.port,
        "extra": conn.extra_dejson,
    }


@pytest.mark.parametrize("value", SAME_AS_AIRFLOW)
def test_fields_are_the_ones_airflow_reads(value: str) -> None:
    assert our_fields(parse_connection("c", value)) == airflow_fields("c", value)


def test_uri_with_a_percent_encoded_key_and_extras_makes_the_hooks_settings() -> None:
    value = (
        f"anthropix://:{quote(SENDABLE_KEY, safe='')}@{quote('http://127.0.0.1', safe='')}:8787?max_retries=0&timeout=5"
    )
    config = config_from_connection("c", parse_connection("c", value))
    assert config.api_key == SENDABLE_KEY
    assert config.base_url == "http://127.0.0.1:8787"
    assert (config.max_retries, config.read_timeout) == (0, 5.0)


def test_uri_with_extra_json_and_json_form_agree() -> None:
    extra = {"anthropic_version": "2023-06-01", "anthropic_beta": ["x", "y"], "workspace_id": "w1"}
    key = quote(SENDABLE_KEY, safe="")
    uri = f"anthropix://https://:{key}@gw.internal:8443/?__extra__={quote(json.dumps(extra), safe='')}"
    as_json = json.dumps(
        {"conn_type": "anthropix", "password": SENDABLE_KEY, "host": "https://gw.internal:8443", "extra": extra}
    )
    from_uri = config_from_connection("c", parse_connection("c", uri))
    from_json = config_from_connection("c", parse_connection("c", as_json))
    assert from_uri == from_json
    assert from_uri.anthropic_beta == ("x", "y") and from_uri.workspace_id == "w1"


def test_the_variable_name_is_the_upper_cased_id_and_empty_is_unset() -> None:
    assert env_var_name("anthropix_default") == "AIRFLOW_CONN_ANTHROPIX_DEFAULT"
    assert read_env_connection("x", {}) is None
    assert read_env_connection("x", {"AIRFLOW_CONN_X": ""}) is None
    found = read_env_connection("x", {"AIRFLOW_CONN_X": json.dumps({"password": "k"})})
    assert found is not None and found.password == "k"


def test_repr_shows_no_secret() -> None:
    conn = parse_connection("c", json.dumps({"login": "l-secret", "password": KEY, "extra": {"k": "v-secret"}}))
    assert KEY not in repr(conn) and "secret" not in repr(conn)


#: Malformed values that carry the key, and what the error says instead of the value.
MALFORMED = [
    ("{" + f'"password": "{KEY}", ', "not valid JSON"),
    (json.dumps([KEY]), "neither a JSON object nor a URI"),
    (json.dumps({"password": KEY, "hots": "http://x"}), "hots"),
    (json.dumps({KEY: 1}), "1 field(s)"),
    (json.dumps({"password": 123456789}), "password is a JSON int"),
    (json.dumps({"password": KEY, "port": KEY}), "port is not a whole number"),
    (json.dumps({"password": KEY, "extra": "{" + KEY}), "extra is not valid JSON"),
    (json.dumps({"password": KEY, "extra": [KEY]}), "extra is a JSON list"),
    (f"anthropix://:{KEY}", "cannot be read as a URI"),
    (f"anthropix://:{quote(KEY, safe='')}@host:{quote(KEY, safe='')}", "cannot be read as a URI"),
    (f"anthropix://:{quote(KEY, safe='')}@[{quote(KEY, safe='')}", "cannot be read as a URI"),
    (f"{KEY}", "neither a JSON object nor a URI"),
    (f"anthropix://:{quote(KEY, safe='')}@http://host", "own scheme goes first"),
    (f"a://b://c://{KEY}", "more than two"),
    (f"://:{quote(KEY, safe='')}@host", "connection type"),
    (f"anthropix://:{quote(KEY, safe='')}@h?__extra__=" + quote("{" + KEY), "extra is not valid JSON"),
    ("   ", "blank"),
]


@pytest.mark.parametrize(("value", "says"), MALFORMED)
def test_a_malformed_value_is_described_never_echoed(value: str, says: str) -> None:
    with pytest.raises(ConnectionSettingsError) as caught:
        parse_connection("my_conn", value)
    message = str(caught.value)
    assert says in message and "AIRFLOW_CONN_MY_CONN" in message
    for piece in (KEY, quote(KEY, safe=""), KEY[:12], KEY[-8:], "Zx9"):
        assert piece not in message
