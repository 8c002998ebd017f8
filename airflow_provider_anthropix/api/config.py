"""Client settings shared by the sync and async clients, and the pieces of a call built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_provider_anthropix.api.limits import DEFAULT_API_VERSION, DEFAULT_BASE_URL, check_api_version
from airflow_provider_anthropix.api.origin import AmbiguousURLError, Origin, plain_url
from airflow_provider_anthropix.api.redact import Redactor, url_credentials
from airflow_provider_anthropix.api.retry import DEFAULT_MAX_RETRIES, DEFAULT_MAX_TOTAL_RETRY_WAIT, RetryPolicy

USER_AGENT = "airflow-provider-anthropix"
#: Seconds to wait for a TCP/TLS connection, unless the connection's ``extra.timeout`` says otherwise.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds to wait between bytes of an answer, unless the connection's ``extra.timeout`` says otherwise.
DEFAULT_READ_TIMEOUT = 60.0


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value (only printable ASCII can), or None.

    Never quotes the value: it may be the key.
    """
    for position, char in enumerate(value):
        if not " " <= char <= "~":
            kind = "a non-ASCII" if ord(char) > 127 else "a control"
            return f"has {kind} character at position {position}; only printable ASCII can be sent in a header"
    return None


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs to talk to the API.

    The key is sent as ``x-api-key`` (accepted by every API version and by the emulator;
    it is also what proxies and curl examples expect). It is excluded from ``repr`` so the
    config can be logged.

    :param api_key: the Anthropic API key.
    :param base_url: scheme and host (and port) of the API; paths start with ``/v1``.
    :param anthropic_version: the ``anthropic-version`` header; requests are validated by its rules.
    :param anthropic_beta: values joined into the ``anthropic-beta`` header.
    :param workspace_id: sent as ``anthropic-workspace-id`` for keys that span workspaces.
    :param connect_timeout: seconds to wait for a TCP/TLS connection.
    :param read_timeout: seconds to wait between bytes of a response.
    :param max_retries: retries after the first attempt of one call.
    :param proxies: ``{"http": url, "https": url}``; credentials in them are redacted from messages.
    :param connection_id: the Airflow connection these settings came from, named in error messages.
    """

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    anthropic_version: str = DEFAULT_API_VERSION
    anthropic_beta: tuple[str, ...] = ()
    workspace_id: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    max_total_retry_wait: float = DEFAULT_MAX_TOTAL_RETRY_WAIT
    proxies: dict[str, str] | None = field(default=None, repr=False)
    connection_id: str | None = None

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("an API key is required")
        if (problem := header_value_problem(self.api_key)) is not None:
            raise ValueError(f"the API key {problem}")
        try:
            plain_url(self.base_url)
        except AmbiguousURLError as exc:
            shown = Redactor(url_credentials(self.base_url))(repr(self.base_url))
            raise ValueError(f"base_url must look like https://host[:port], got {shown}: it {exc}") from None
        if "?" in self.base_url:
            raise ValueError("base_url must not have a query")
        if (problem := check_api_version(self.anthropic_version)) is not None:
            raise ValueError(f"anthropic_version: {problem}")
        for name, values in (("anthropic_beta", self.anthropic_beta), ("workspace_id", [self.workspace_id or ""])):
            for value in values:
                if (problem := header_value_problem(value)) is not None:
                    raise ValueError(f"{name} {value!r} {problem}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "anthropic_beta", tuple(b for b in self.anthropic_beta if b))

    @property
    def origin(self) -> Origin:
        """Where the key may be sent: the only origin any request of this client goes to."""
        return plain_url(self.base_url)

    def secrets(self) -> list[str]:
        """Every string that must never appear in a message: the key and proxy credentials."""
        found = [self.api_key]
        for url in (self.proxies or {}).values():
            found += url_credentials(url)
        return found

    def redactor(self) -> Redactor:
        return Redactor(self.secrets())

    def where(self) -> str:
        """The origin, and the connection when known, for error messages (no secrets: userinfo is refused)."""
        text = str(self.base_url)
        return f"{text} (connection {self.connection_id!r})" if self.connection_id else text

    def headers(self) -> dict[str, str]:
        """Headers for every call. Contains the key: never log the result."""
        headers = {
            "x-api-key": self.api_key,
            "anthropic-version": self.anthropic_version,
            "accept": "application/json",
            "user-agent": USER_AGENT,
        }
        if self.anthropic_beta:
            headers["anthropic-beta"] = ",".join(self.anthropic_beta)
        if self.workspace_id:
            headers["anthropic-workspace-id"] = self.workspace_id
        return headers

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, max_total_wait=self.max_total_retry_wait)

    def cache_key(self) -> tuple[Any, ...]:
        """A hashable identity of these settings, for sharing one client between identical configs."""
        proxies = tuple(sorted(self.proxies.items())) if self.proxies else ()
        return (
            self.api_key,
            self.base_url,
            self.anthropic_version,
            self.anthropic_beta,
            self.workspace_id,
            self.connect_timeout,
            self.read_timeout,
            self.max_retries,
            self.max_total_retry_wait,
            proxies,
            self.connection_id,
        )

    def describe(self) -> dict[str, Any]:
        """The settings without the key, for logs and connection tests."""
        return {
            "base_url": self.base_url,
            "anthropic_version": self.anthropic_version,
            "anthropic_beta": list(self.anthropic_beta),
            "workspace_id": self.workspace_id,
            "timeouts": [self.connect_timeout, self.read_timeout],
            "max_retries": self.max_retries,
            "proxies": sorted(self.proxies) if self.proxies else None,
            "connection_id": self.connection_id,
        }
