"""Read an MLflow model's input signature and describe it in Open Inference Protocol (V2) terms.

The signature is the contract the runtime enforces: one V2 input per column, decoded to the column's
dtype before the model sees it. A model without a column-based signature cannot be served, because the
runtime would have nothing to validate requests against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.models

# The kind decides how request data is checked and decoded (see serving.decode).
_KINDS: dict[str, tuple[str, str]] = {
    # mlflow DataType name -> (decode kind, V2 datatype advertised in metadata)
    "boolean": ("bool", "BOOL"),
    "integer": ("int32", "INT32"),
    "long": ("int64", "INT64"),
    "float": ("float32", "FP32"),
    "double": ("float64", "FP64"),
    "string": ("str", "BYTES"),
    "binary": ("bytes", "BYTES"),
    "datetime": ("datetime", "BYTES"),
}

# The Open Inference Protocol's tensor data types, spelled as its spec spells them.
V2_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64", "BYTES")  # fmt: skip

# V2 datatypes a client may send for each kind. Integers may arrive in any integer width (clients
# pick the width of their numpy array); floats accept integers too. Everything else must match.
_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
ACCEPTED_DATATYPES: dict[str, tuple[str, ...]] = {
    "bool": ("BOOL",),
    "int32": _INTS,
    "int64": _INTS,
    "float32": ("FP16", "FP32", "FP64", *_INTS),
    "float64": ("FP16", "FP32", "FP64", *_INTS),
    "str": ("BYTES",),
    "bytes": ("BYTES",),
    "datetime": ("BYTES",),
}

OUTPUT_NAME = "predictions"
# Asked for in a request's `outputs`: per-row feature contributions (a model with an `explain` method).
CONTRIBUTIONS_NAME = "contributions"
OUTPUT_NAMES = (OUTPUT_NAME, CONTRIBUTIONS_NAME)


class SignatureError(RuntimeError):
    """The model directory cannot be served (no MLmodel, or no column-based input signature)."""


@dataclass(frozen=True)
class Column:
    name: str
    mlflow_type: str
    kind: str
    datatype: str
    required: bool

    @property
    def accepted(self) -> tuple[str, ...]:
        return ACCEPTED_DATATYPES[self.kind]


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime knows about the model directory, from its MLmodel file."""

    columns: tuple[Column, ...]
    run_id: str
    model_uuid: str
    flavors: tuple[str, ...]

    def input_metadata(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "datatype": c.datatype, "shape": [-1]} for c in self.columns]

    @staticmethod
    def output_metadata(explained: int | None = None) -> list[dict[str, Any]]:
        """`explained`: how many contribution columns the model gives (features + bias), if it can."""
        outputs: list[dict[str, Any]] = [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]}]
        if explained:
            outputs.append({"name": CONTRIBUTIONS_NAME, "datatype": "FP32", "shape": [-1, explained]})
        return outputs


def read_model_info(model_dir: Path) -> ModelInfo:
    if not (model_dir / "MLmodel").is_file():
        raise SignatureError(f"{model_dir} has no MLmodel file: not an MLflow model directory")
    mlmodel = mlflow.models.Model.load(str(model_dir))
    signature = mlmodel.signature
    if signature is None or signature.inputs is None:
        raise SignatureError(f"{model_dir}: the MLflow model has no input signature")
    if not signature.inputs.has_input_names() or signature.inputs.is_tensor_spec():
        raise SignatureError(f"{model_dir}: the input signature must be column-based (named columns)")
    columns = []
    for spec in signature.inputs.inputs:
        type_name = getattr(spec.type, "name", str(spec.type))
        if type_name not in _KINDS:
            raise SignatureError(f"{model_dir}: column {spec.name!r} has unsupported type {type_name}")
        kind, datatype = _KINDS[type_name]
        columns.append(Column(spec.name, type_name, kind, datatype, bool(getattr(spec, "required", True))))
    return ModelInfo(
        columns=tuple(columns),
        run_id=mlmodel.run_id or "",
        model_uuid=getattr(mlmodel, "model_uuid", None) or "",
        flavors=tuple(sorted(mlmodel.flavors)),
    )
