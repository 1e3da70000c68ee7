"""Batch jobs: one home for each part.

- :mod:`~chalicelib.jobs.state`: the item state machine and job counters (every
  conditional write of jobs and items; the lease conditions, built once);
- :mod:`~chalicelib.jobs.submit`: ``POST /v1/jobs`` (parsing, validation, idempotency,
  writing, enqueueing);
- :mod:`~chalicelib.jobs.views`: the JSON shapes, the ETA and the read routes;
- :mod:`~chalicelib.jobs.control`: cancel and retry;
- :mod:`~chalicelib.jobs.worker`: the jobs-queue SQS handler (one item or archive a message);
- :mod:`~chalicelib.jobs.recovery`: the scheduled sweep that moves stuck work on.
"""
