"""KServe's DataPlane with the request checks it lacks before a REST body becomes an InferRequest.

- A body without Content-Type reaches DataPlane.decode as raw bytes, which KServe refuses (it wants
  the binary extension's header). tritonclient.http sends JSON without a content type, so such a body
  is parsed as JSON; an explicit non-JSON type stays a 400.
- Datatypes are checked as sent (`int64` is not a V2 datatype; KServe would upper-case it).
- A binary-extension body is checked by serving.binary_ext before KServe's decoder sees it.
- Whatever KServe's decoder still raises for a malformed body is a 400 naming the body, and every
  rejection here is counted for the model (the model counts what reaches it).
"""

from __future__ import annotations

from typing import Any

import pydantic
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER, PredictorProtocol
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.v2_datamodels import InferenceRequest

from serving.binary_ext import check_binary_request, header_length
from serving.decode import RequestError, check_datatype_names
from serving.errors import format_validation_errors, record_rejected
from serving.model import SluiceModel


class SluiceDataPlane(DataPlane):
    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        # KServe leaves `versions` out; a canary and its stable revision must be told apart.
        metadata = await super().model_metadata(model_name)
        model = self.model_registry.get_model(model_name)
        if isinstance(model, SluiceModel):
            metadata["versions"] = [model.version]
            metadata["platform"] = "mlflow"
        return metadata

    def decode(  # type: ignore[override]
        self,
        body: Any,
        headers: dict[str, str] | None,
        protocol_version: str = PredictorProtocol.REST_V1.value,
        model_name: str | None = None,
    ) -> Any:
        headers = headers or {}
        try:
            if protocol_version.lower() == PredictorProtocol.REST_V2.value:
                body = _checked_v2_body(body, headers)
            return super().decode(body, headers, protocol_version, model_name)
        except InvalidInput:
            record_rejected(self.model_registry, model_name)
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, InferenceError) as e:
            record_rejected(self.model_registry, model_name)
            raise RequestError("body", f"malformed V2 request ({type(e).__name__}: {e})") from e
        except Exception:
            record_rejected(self.model_registry, model_name, "error")
            raise


def _checked_v2_body(body: Any, headers: dict[str, str]) -> Any:
    if isinstance(body, InferenceRequest):
        check_datatype_names((i.name, i.datatype) for i in body.inputs)
        return body
    if not isinstance(body, bytes):
        return body
    if INFERENCE_CONTENT_LENGTH_HEADER in headers:
        check_binary_request(body, header_length(headers[INFERENCE_CONTENT_LENGTH_HEADER], len(body)))
        return body
    if not headers.get("content-type"):
        # tritonclient.http sends JSON without a content-type; FastAPI then hands over raw bytes.
        request = _parse_v2_json(body)
        check_datatype_names((i.name, i.datatype) for i in request.inputs)
        return request
    raise RequestError(
        "content-type",
        f"got {headers.get('content-type')!r}; expected application/json "
        f"(or the binary tensor extension with {INFERENCE_CONTENT_LENGTH_HEADER})",
    )


def _parse_v2_json(body: bytes) -> InferenceRequest:
    try:
        return InferenceRequest.model_validate_json(body)
    except pydantic.ValidationError as e:
        raise InvalidInput(format_validation_errors(e.errors())) from None  # the text names the field
