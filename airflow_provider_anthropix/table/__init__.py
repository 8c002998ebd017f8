"""Table in, table out: rows rendered into requests, answers parsed and joined back as typed columns.

Airflow-free like ``workflow/``: it reads and writes through ``ObjectStoragePath`` and pyarrow,
and builds on ``api``, ``cost`` and ``io``. :class:`~airflow_provider_anthropix.operators.table.BatchTableOperator`
runs it on the batch job's engine.
"""
