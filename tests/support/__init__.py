"""Helpers shared by several test modules; no tests live here, so pytest collects nothing from it.

- ``airflow``: a throw-away Airflow home with a migrated database, DAG files written and imported,
  a stand-in for the task state store;
- ``emulator``: ended batches made on the emulator and the results stream it serves;
- ``fake_api``: an in-memory Message Batches API with the calls the workflow layer makes, for its
  unit tests;
- ``files``: in-memory files for the writers;
- ``http``: a quiet request handler for the loopback servers that stand in for the API;
- ``job``: a batch job's runner on the real client, emulator and files, with crashes on demand;
- ``paths``: the repository and ``tests/data``, wherever a test file sits;
- ``payloads``: API payloads built in memory (result lines, a mixed results stream, an ended
  batch object) and counting the outcomes in a stream;
- ``request_shapes``: the request shapes users send, hand-written and composed by Hypothesis;
- ``s3``: the S3 API server fixtures (``s3_url``, ``s3``).
"""
