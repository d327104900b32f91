"""One translation of pydantic errors: for requests checked here and those the server refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pulumi_capy.api.errors import FieldError, InvalidInput
from pulumi_capy.api.models import CreateRestorePoint, RestoreRequest
from pulumi_capy.api.validation import field_errors, http_field_errors, parse_request


def _validation_error(model: type[Any], data: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return caught.value


def test_field_errors_name_each_field_unknown_fields_and_every_field_a_rule_blames() -> None:
    error = _validation_error(
        RestoreRequest, {"backup_key": "k", "restore_time": "2026-11-26T05:00:00Z", "nope": 1}
    )
    assert field_errors(error) == [FieldError("nope", "unknown field")]
    rule = _validation_error(RestoreRequest, {"backup_key": "k", "restore_point_id": "rp_1"})
    assert [problem.field for problem in field_errors(rule)] == ["backup_key", "restore_point_id"]
    assert all("exactly one restore source" in problem.message for problem in field_errors(rule))


def test_field_errors_of_the_whole_input_name_the_request() -> None:
    error = _validation_error(CreateRestorePoint, ["not", "an", "object"])
    assert [problem.field for problem in field_errors(error)] == ["request"]


def test_the_server_translation_is_the_same_without_the_source_of_the_value() -> None:
    error = _validation_error(
        CreateRestorePoint, {"label": "", "kind": "backup", "backup_key": "k", "x": 1}
    )
    here = field_errors(error)
    over_http = [
        {**item, "loc": ("body", *item["loc"])} for item in error.errors(include_url=False)
    ]
    assert http_field_errors(over_http) == here
    assert [problem.field for problem in here] == ["label", "x"]
    assert here[1].message == "unknown field"
    assert "Value error" not in here[0].message


def test_a_rule_over_the_whole_body_still_names_its_fields_over_http() -> None:
    rule = _validation_error(RestoreRequest, {"backup_key": "k", "restore_point_id": "rp_1"})
    items = [{**item, "loc": ("body",)} for item in rule.errors(include_url=False)]
    assert [problem.field for problem in http_field_errors(items)] == [
        "backup_key",
        "restore_point_id",
    ]


@pytest.mark.parametrize(
    "item",
    [
        {"type": "json_invalid", "loc": ("body", 12), "msg": "JSON decode error"},
        {"type": "model_attributes_type", "loc": ("body",), "msg": "Input should be an object"},
    ],
)
def test_a_body_that_is_not_a_json_object_is_the_body_s_error(item: dict[str, Any]) -> None:
    assert http_field_errors([item]) == [
        FieldError("body", "must be a JSON object (is it valid JSON?)")
    ]


def test_query_and_path_values_are_named_without_their_source() -> None:
    item = {"type": "int_parsing", "loc": ("query", "limit"), "msg": "Input should be an int"}
    assert http_field_errors([item]) == [FieldError("limit", "Input should be an int")]


def test_parse_request_raises_invalid_input_naming_the_fields_and_passes_a_model_through() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_request(CreateRestorePoint, {"label": "", "backup_key": "k"}, what="restore point")
    assert caught.value.fields == ["label"]
    assert str(caught.value).startswith("restore point: ")
    point = CreateRestorePoint(label="x", backup_key="k")
    assert parse_request(CreateRestorePoint, point) is point
