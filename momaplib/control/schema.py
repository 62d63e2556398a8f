"""The JSON Schema of the motion DSL and error messages that name the offending field.

The schema checks every field a reader depends on (types, words per axis, three words per window,
no unknown keys). What JSON Schema cannot say (every patch has the same number of windows, ids are
unique) is checked in ``momaplib.control.dsl`` with the same error type and field naming.
"""

from __future__ import annotations

from typing import Any

#: Words of each axis, indexed by ``flag + 1`` (flag -1, 0, +1). Axes are those of the reference
#: camera (OpenCV): x right, y down, z forward (away from the camera).
AXIS_WORDS: tuple[tuple[str, str, str], ...] = (
    ("left", "stay", "right"),  # x: -1 = left, +1 = right
    ("up", "stay", "down"),  # y: -1 = up (image up, -y), +1 = down
    ("backward", "stay", "forward"),  # z: -1 = backward (towards the camera), +1 = forward (away)
)
#: Axis names in DSL order.
AXES = ("x", "y", "z")

_WORD_SCHEMAS = [{"enum": list(words)} for words in AXIS_WORDS]

#: JSON Schema (draft 2020-12) of the motion DSL's JSON form (DESIGN.md, "Motion DSL").
DSL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "MoMap motion DSL",
    "description": (
        "Per semantic patch (instance) and per window of `window` frames, the direction of the patch "
        "centroid's displacement along x (left/right), y (up/down) and z (forward = away from the "
        "camera / backward = towards it) of the reference camera, or stay."
    ),
    "type": "object",
    "required": ["fps", "window", "patches"],
    "additionalProperties": False,
    "properties": {
        "fps": {"type": "number", "exclusiveMinimum": 0, "description": "frames per second of the clip"},
        "window": {"type": "integer", "minimum": 1, "description": "frames per window"},
        "patches": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "label", "motion"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "description": "instance id in the instance map"},
                    "label": {"type": "string", "minLength": 1, "description": "what the patch is"},
                    "motion": {
                        "type": "array",
                        "minItems": 1,
                        "description": "one [x, y, z] word triple per window, in time order",
                        "items": {
                            "type": "array",
                            "minItems": 3,
                            "maxItems": 3,
                            "prefixItems": _WORD_SCHEMAS,
                        },
                    },
                },
            },
        },
    },
}


def field_path(path: Any) -> str:
    """Returns a JSON path as a field name, e.g. ``patches[2].motion[1][0]`` (``"(root)"`` when empty)."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def describe_error(error: Any) -> str:
    """Returns one line for a ``jsonschema.ValidationError``: the field, what was expected, what came."""
    path = list(error.absolute_path)
    where = field_path(path)
    value, kind, expected = error.instance, error.validator, error.validator_value
    if kind == "enum":
        return f"{where}: expected one of {'/'.join(expected)}, got {value!r}"
    if kind == "type":
        return f"{where}: expected {expected}, got {_json_type(value)} {value!r}"
    if kind == "required":
        missing = [key for key in expected if key not in value]
        return f"{field_path([*path, missing[0]])}: missing (required)"
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed))
        return f"{where}: unknown field(s) {unknown}; expected only {allowed}"
    if kind in ("minItems", "maxItems"):
        bound = "at least" if kind == "minItems" else "at most"
        return f"{where}: expected {bound} {expected} item(s), got {len(value)}"
    if kind == "minLength":
        return f"{where}: expected a non-empty string, got {value!r}"
    if kind in ("minimum", "exclusiveMinimum"):
        relation = ">=" if kind == "minimum" else ">"
        return f"{where}: expected a number {relation} {expected}, got {value!r}"
    return f"{where}: {error.message}"  # pragma: no cover - every keyword of DSL_SCHEMA is handled above
