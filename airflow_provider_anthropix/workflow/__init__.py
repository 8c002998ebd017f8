"""What to do with batches, without Airflow: policies and plans the operators and sensors share."""
