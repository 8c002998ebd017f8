"""What to do, without Airflow: the create-once ledger, batch job plans and their state machine, the outcome policy.

Operators, sensors and triggers are thin adapters over this layer; it is tested on its own,
against small protocols (a state store, the API calls it needs, the job's files).
"""
