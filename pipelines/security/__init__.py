"""Security checks a developer or CI runs over the repository (docs/security.md).

- `history`: no secret value in any commit of the Git history (detect-secrets over every added line).
- `checkov`: checkov's policies over terraform/ and the Kubernetes manifests, in a virtualenv of its
  own (its pins clash with the project's), with every exception justified where it applies.
- `listeners`: which sockets the embedded platform's processes listen on (all must be loopback).
"""
