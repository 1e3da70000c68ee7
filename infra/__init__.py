"""PromptCanvas infrastructure: the CloudFormation resources merged into Chalice's
packaged template, and the per-stage IAM policies.

- :mod:`infra.template` builds ``infra/resources.json`` (tables from the PynamoDB
  models, buckets, CloudFront, queues, secret, alarms, outputs).
- :mod:`infra.policy` scans ``chalicelib`` for AWS calls and, following each Lambda
  function's code path (:mod:`infra.callgraph`), builds its least-privilege
  ``.chalice/policy-<stage>-<function>.json``.
- ``python -m infra.build`` writes both; ``python -m infra.build --check`` fails when a
  committed file differs from a fresh generation (``make package`` runs the check).
"""
