"""Pydantic's validation errors as ``InvalidInput``: one ``FieldError`` per bad field.

The one translation for every caller: requests validated in this process
(``parse_request``, the provider's ``check``) and requests the server's HTTP
layer refused (``http_field_errors``). A rule over several fields
(``RuleError``) gives one entry per field it blames; an unknown field is
"unknown field"; pydantic's "Value error, " prefix is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from pulumi_capy.api.errors import FieldError, InvalidInput
from pulumi_capy.api.models import ApiRequest, RuleError

__all__ = ["field_errors", "http_field_errors", "parse_request"]

RequestT = TypeVar("RequestT", bound=ApiRequest)

# What FastAPI puts in a location before the field's own name: where the value came from.
_HTTP_SOURCES = ("body", "query", "path")
_NOT_A_JSON_OBJECT = "must be a JSON object (is it valid JSON?)"


def _rule_error(item: Mapping[str, Any]) -> RuleError | None:
    cause = (item.get("ctx") or {}).get("error")
    return cause if isinstance(cause, RuleError) else None


def _translate(item: Mapping[str, Any], location: str) -> list[FieldError]:
    """The entries of one pydantic error found at ``location``."""
    rule = _rule_error(item)
    if rule is not None:
        return [FieldError(name, rule.message) for name in rule.fields]
    if item.get("type") == "extra_forbidden":
        return [FieldError(location, "unknown field")]
    message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
    return [FieldError(location, message)]


def field_errors(error: ValidationError) -> list[FieldError]:
    """One ``FieldError`` per pydantic error, named by its dotted field (``request`` when
    the error is about the whole input)."""
    result: list[FieldError] = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item.get("loc", ())) or "request"
        result.extend(_translate(item, location))
    return result


def http_field_errors(errors: Iterable[Mapping[str, Any]]) -> list[FieldError]:
    """``field_errors`` of the errors of a request refused by FastAPI
    (``RequestValidationError.errors()``): a field is named without its source
    (body, query, path), and a body that is not a JSON object is ``body``'s error."""
    result: list[FieldError] = []
    for item in errors:
        parts = [str(part) for part in item.get("loc", ()) if part not in _HTTP_SOURCES]
        location = ".".join(parts) or "body"
        whole_body = location == "body" or item.get("type") == "json_invalid"
        if whole_body and _rule_error(item) is None:
            result.append(FieldError("body", _NOT_A_JSON_OBJECT))
        else:
            result.extend(_translate(item, location))
    return result


def parse_request(model: type[RequestT], data: Any, *, what: str | None = None) -> RequestT:
    """Validate ``data`` as ``model``, raising ``InvalidInput`` that names each bad field."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc), what=what) from None
