"""How long the API keeps a batch's results, and ages written the way people type them (``20d``, ``36h``).

Standard library only: the CLI's parser uses :func:`parse_age` to check ``--older-than``
before anything else is imported.
"""

from __future__ import annotations

import re
from datetime import timedelta

#: How long the API keeps a batch's results after the batch was created (api-notes: 29 days);
#: then ``archived_at`` is set and the download fails.
RESULTS_KEPT = timedelta(days=29)

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_age(text: str) -> timedelta:
    """``20d``, ``36h``, ``90m``, ``2w``, ``1d12h``, ``1.5d`` as a duration; raises ValueError for anything else."""
    value = text.strip().lower()
    if not value or _AGE.sub("", value):
        raise ValueError(f"expected an age such as 20d, 36h, 90m or 1d12h (units s, m, h, d, w); got {text!r}")
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _AGE.findall(value)))
