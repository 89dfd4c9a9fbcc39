"""The embedded platform: everything `sluice up` runs on a laptop, kept apart from promotion logic.

LocalStack S3 (+ an on-disk mirror that survives restarts), terraform/storage, the MLflow tracking
server, Prometheus, the GitOps repository as a git remote with hooks, the CI runner (act), and the
local cluster stand-in for ArgoCD + KServe + Knative. Each service is a host process managed by
processes.py; `up.py` starts and stops them in order.
"""
