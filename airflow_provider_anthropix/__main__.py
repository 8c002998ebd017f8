"""``python -m airflow_provider_anthropix``: the ``anthropix`` command line."""

from __future__ import annotations

import sys

from airflow_provider_anthropix.cli import main

if __name__ == "__main__":
    sys.exit(main())
