"""What a batch costs: the price table and the price of usage that happened (``pricing``), the
estimate before sending (``estimate``) and the defaults operators put in their signatures (``budget``).

Airflow-free and I/O-free: it imports only ``api`` (for the error family), so ``io``, ``workflow``
and the operators all build on it.
"""
