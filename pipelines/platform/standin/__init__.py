"""A local stand-in for the cluster: ArgoCD + KServe (Knative mode) + Knative Serving, named as such.

Kind, Knative, the KServe controller and ArgoCD cannot run on these machines; this process does the
part of their work the GitOps loop depends on, with real runtime processes, so the local path and the
cluster path run the same CI steps against the same manifests:
- it follows the GitOps remote's branch and applies every `gitops/models/*/inferenceservice.yaml`
  (ArgoCD, polling every SLUICE_POLL_INTERVAL seconds instead of three minutes);
- it turns each spec into Knative revisions and a traffic route by KServe's rules (knative.py), runs
  each revision's pods as `python -m serving` processes (pods.py), and splits requests between them
  (router.py), on 127.0.0.1:8080 by default;
- it answers the InferenceService's status on the Kubernetes API path, and writes every pod as a
  Prometheus scrape target labelled with its revision.
What it does not do: admission webhooks, autoscaling beyond min replicas, scale to zero, gRPC
routing (Knative routes one port; each pod's gRPC port is listed in its status), networking.
"""
