"""Airflow hooks of the provider."""

from __future__ import annotations

#: The connection id every operator, sensor and trigger uses unless told otherwise. Kept here,
#: not only on the hook, so that naming it in a signature does not import the hook's clients.
DEFAULT_CONN_ID = "anthropix_default"
