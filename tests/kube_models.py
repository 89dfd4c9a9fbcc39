"""Test helpers: strict validation of manifests against real schemas, no cluster needed.

- `build_strict(doc, "V1beta1InferenceService")` deserialises a dict into KServe's own generated
  models (which reference the kubernetes client's models), failing on any unknown or misspelt key.
  The generated classes silently ignore unknown keys and the API server would prune them, so a
  typo such as `canaryTrafficPercentage` would vanish without a word; here it is an error. Building
  the real model instances also runs their client-side checks (required fields such as a
  container's `name` or a model format's `name`).
- `argocd_validator(kind)` is a jsonschema validator for ArgoCD's Application / AppProject,
  from the CRD schemas vendored in tests/schemas/, made strict the same way.
"""

from __future__ import annotations

import difflib
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kserve.models
import kubernetes.client.models
import yaml

SCHEMAS = Path(__file__).parent / "schemas"

_LIST = re.compile(r"(?:list|List)\[(.+)\]")
_DICT = re.compile(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])")
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
    # Kubernetes quantities: "500m", "1Gi", or a bare number.
    "ResourceQuantity": (str, int, float),
}


class StrictError(ValueError):
    pass


def _model_class(type_name: str) -> Any:
    for module in (kserve.models, kubernetes.client.models):
        cls = getattr(module, type_name, None)
        if isinstance(cls, type) and hasattr(cls, "openapi_types"):
            return cls
    return None


def build_strict(value: Any, type_name: str, path: str = "") -> Any:
    """Turn `value` into an instance of the generated model `type_name`, rejecting unknown keys."""
    where = path or "(root)"
    if type_name == "object":  # int-or-string ports, free-form fields
        return value
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        if isinstance(value, bool) and bool not in allowed:
            raise StrictError(f"{where}: expected {type_name}, got a boolean {value!r}")
        if not isinstance(value, allowed):
            raise StrictError(f"{where}: expected {type_name}, got {type(value).__name__} {value!r}")
        return value
    if m := _LIST.fullmatch(type_name):
        if not isinstance(value, list):
            raise StrictError(f"{where}: expected a list, got {type(value).__name__}")
        return [build_strict(v, m.group(1), f"{path}[{i}]") for i, v in enumerate(value)]
    if m := _DICT.fullmatch(type_name):
        if not isinstance(value, dict):
            raise StrictError(f"{where}: expected a mapping, got {type(value).__name__}")
        inner = m.group(1) or m.group(2)
        return {k: build_strict(v, inner, f"{path}.{k}") for k, v in value.items()}

    cls = _model_class(type_name)
    if cls is None:
        raise StrictError(f"{where}: type {type_name} is not in the kserve/kubernetes models; cannot verify it")
    if not isinstance(value, dict):
        raise StrictError(f"{where}: expected a {type_name} mapping, got {type(value).__name__}")
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in by_json:
            close = difflib.get_close_matches(key, by_json, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StrictError(f"{where}: unknown field {key!r} for {type_name}{hint}")
        attr = by_json[key]
        kwargs[attr] = build_strict(item, cls.openapi_types[attr], f"{path}.{key}" if path else key)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:  # the generated models' own required/enum checks
        raise StrictError(f"{where}: {type_name}: {err}") from None


KSERVE_KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
}


def validate_kserve(doc: dict[str, Any]) -> Any:
    type_name = KSERVE_KINDS[(doc["apiVersion"], doc["kind"])]
    return build_strict(doc, type_name)


def _strictify(schema: Any) -> Any:
    """Add additionalProperties: false wherever the structural schema lists its properties."""
    if isinstance(schema, dict):
        out = {k: _strictify(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strictify(v) for v in schema]
    return schema


ARGOCD_SCHEMAS = {
    "Application": "argocd-application-v1alpha1.yaml",
    "AppProject": "argocd-appproject-v1alpha1.yaml",
    "PrometheusRule": "monitoring-prometheusrule-v1.yaml",
}


@cache
def argocd_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = _strictify(yaml.safe_load((SCHEMAS / ARGOCD_SCHEMAS[kind]).read_text()))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


CRD_VERSIONS = {
    "Application": "argoproj.io/v1alpha1",
    "AppProject": "argoproj.io/v1alpha1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}


def validate_crd(doc: dict[str, Any]) -> None:
    """Validate an object of a vendored CRD (ArgoCD's, prometheus-operator's), strictly."""
    if doc.get("apiVersion") != CRD_VERSIONS.get(doc.get("kind", "")):
        raise StrictError(f"{doc.get('kind')}: apiVersion must be {CRD_VERSIONS.get(doc.get('kind', ''))}")
    errors = sorted(argocd_validator(doc["kind"]).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        raise StrictError("; ".join(f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors))


validate_argocd = validate_crd
