"""The `--json` result schema (result.schema.json beside this file) and a small validator.

Why our own validator: the schema is the documentation of the result format (each field has a
description), and `--baseline FILE` must refuse a file that is not such a result with a
one-line message naming the bad field. A full JSON Schema implementation would be one more
dependency for that; the schema uses only the keywords implemented here (type, const, enum,
required, properties, additionalProperties, propertyNames/pattern, items, minItems, maxItems,
minimum, maximum, oneOf, $ref to this document), and the tests check the document against it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "result.schema.json"

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


class SchemaError(ValueError):
    """The document does not match; the message names the path, e.g. `$.latency.count`."""


@cache
def load_schema() -> dict[str, Any]:
    text = resources.files("veloxy.loadgen").joinpath(SCHEMA_FILE).read_text("utf-8")
    return json.loads(text)


def validate(document: object, schema: dict[str, Any] | None = None) -> None:
    """Raise SchemaError at the first place `document` breaks the schema."""
    root = schema if schema is not None else load_schema()
    _check(document, root, root, "$")


def _is_type(value: object, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise SchemaError(f"unsupported $ref {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _check(value: object, schema: dict[str, Any], root: dict[str, Any], path: str) -> None:
    if "$ref" in schema:
        _check(value, _resolve(root, schema["$ref"]), root, path)
    if "oneOf" in schema:
        matches = 0
        first_error: SchemaError | None = None
        for option in schema["oneOf"]:
            try:
                _check(value, option, root, path)
                matches += 1
            except SchemaError as exc:
                first_error = first_error or exc
        if matches != 1:
            if matches == 0 and first_error is not None:
                raise first_error
            raise SchemaError(f"{path}: matches {matches} alternatives, expected one")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(f"{path}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{path}: expected one of {schema['enum']}, got {value!r}")
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is_type(value, n) for n in names):
            raise SchemaError(f"{path}: expected {' or '.join(names)}, "
                              f"got {type(value).__name__}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{path}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, dict):
        _check_object(value, schema, root, path)
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaError(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(f"{path}: more than {schema['maxItems']} items")
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                _check(item, items, root, f"{path}[{i}]")


def _check_object(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any],
                  path: str) -> None:
    for name in schema.get("required", ()):
        if name not in value:
            raise SchemaError(f"{path}: missing {name!r}")
    names = schema.get("propertyNames")
    if names is not None and "pattern" in names:
        pattern = re.compile(names["pattern"])
        for key in value:
            if not pattern.search(key):
                raise SchemaError(f"{path}: bad key {key!r}")
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in props:
            _check(item, props[key], root, f"{path}.{key}")
        elif extra is False:
            raise SchemaError(f"{path}: unexpected key {key!r}")
        elif isinstance(extra, dict):
            _check(item, extra, root, f"{path}.{key}")
