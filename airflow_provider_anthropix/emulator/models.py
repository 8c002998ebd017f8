"""The models the emulator says it serves: ``GET /v1/models`` and ``GET /v1/models/{id}``.

A fixed table of current model ids with their aliases, newest first as the API lists
them. Clients use it to catch a typo in a model name before paying for a batch; with
``unknown_models="errored"`` the emulator also ends requests naming a model outside this
table as ``errored`` results (``invalid_request_error``), the way the API reports
invalid params per request rather than refusing the whole create.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Model:
    """One model as ``/v1/models`` describes it, plus the aliases that resolve to it."""

    id: str
    display_name: str
    created_at: str
    aliases: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The API's model object."""
        return {"type": "model", "id": self.id, "display_name": self.display_name, "created_at": self.created_at}


#: Newest first, like the API's list.
MODELS: tuple[Model, ...] = (
    Model("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z", ("claude-opus-4-5",)),
    Model("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z", ("claude-haiku-4-5",)),
    Model("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z", ("claude-sonnet-4-5",)),
    Model("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z", ("claude-opus-4-1",)),
    Model("claude-opus-4-20250514", "Claude Opus 4", "2025-05-22T00:00:00Z", ("claude-opus-4-0", "claude-opus-4")),
    Model(
        "claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z", ("claude-sonnet-4-0", "claude-sonnet-4")
    ),
    Model(
        "claude-3-7-sonnet-20250219",
        "Claude Sonnet 3.7",
        "2025-02-24T00:00:00Z",
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
    ),
    Model(
        "claude-3-5-haiku-20241022",
        "Claude Haiku 3.5",
        "2024-10-22T00:00:00Z",
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ),
    Model("claude-3-haiku-20240307", "Claude Haiku 3", "2024-03-07T00:00:00Z", ("claude-3-haiku",)),
)

_BY_NAME: dict[str, Model] = {name: m for m in MODELS for name in (m.id, *m.aliases)}
_POSITION: dict[str, int] = {m.id: i for i, m in enumerate(MODELS)}


def resolve(name: str) -> Model | None:
    """The model an id or alias names, or None for an unknown name."""
    return _BY_NAME.get(name)


def page(limit: int, before_id: str | None, after_id: str | None) -> tuple[list[Model], bool]:
    """One page of the list, newest first, paged like the batch list (ids must be full model ids).

    :raises KeyError: a cursor that is not a listed model id.
    """
    if after_id is not None:
        start = _POSITION[after_id] + 1
        chosen = MODELS[start : start + limit]
        return list(chosen), start + limit < len(MODELS)
    if before_id is not None:
        end = _POSITION[before_id]
        start = max(0, end - limit)
        return list(MODELS[start:end]), start > 0
    return list(MODELS[:limit]), limit < len(MODELS)
