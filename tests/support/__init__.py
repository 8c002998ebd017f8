"""Helpers shared by several test modules; no tests live here, so pytest collects nothing from it.

- ``airflow``: a throw-away Airflow home with a migrated database, DAG files written and imported,
  a stand-in for the task state store;
- ``emulator``: ended batches made on the emulator and the results stream it serves;
- ``http``: a quiet request handler for the loopback servers that stand in for the API;
- ``payloads``: API payloads built in memory (result lines, a mixed results stream, an ended
  batch object) and counting the outcomes in a stream.
"""
