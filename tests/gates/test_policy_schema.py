"""The gate policy JSON Schema: generated from the validator, published in docs, and the
example policy validates against it."""

import json
from pathlib import Path

import pytest
import yaml

from lcnn_audit.gates import load_policy
from lcnn_audit.gates.json_schema import policy_schema
from lcnn_audit.gates.policy import CHECK_KEYS, TOP_KEYS, _option_classes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "policy.yaml"
PUBLISHED = ROOT / "docs" / "policy.schema.json"


def test_published_schema_is_current():
    assert json.loads(PUBLISHED.read_text()) == policy_schema(), (
        "docs/policy.schema.json is stale: regenerate it with python scripts/make_policy_schema.py")


def test_schema_names_every_key_the_validator_reads():
    s = policy_schema()
    assert set(s["properties"]) == set(TOP_KEYS)
    assert set(s["properties"]["checks"]["items"]["properties"]) == set(CHECK_KEYS)
    audits = s["properties"]["audits"]["properties"]
    for name, cls in _option_classes().items():
        obj = audits[name]["anyOf"][0]
        fields = {f for f in cls.__dataclass_fields__ if f != "notices"}
        assert set(obj["properties"]) == fields, name
    method = audits["curvature"]["anyOf"][0]["properties"]["method"]
    assert method["enum"] == ["auto", "lanczos", "power", "reference", "gauss-newton"]  # geometry.METHODS


def _structural_errors(value, schema, path="") -> list[str]:
    """Enough of JSON Schema for this schema (objects, arrays, anyOf, enum, const, types)."""
    if "anyOf" in schema:
        found = [_structural_errors(value, s, path) for s in schema["anyOf"]]
        if all(found):
            return [f"{path}: matches no alternative ({'; '.join(found[0])})"]
        return []
    errs = []
    t = schema.get("type")
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if t == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return [f"{path}: not a number"]
    if t == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return [f"{path}: not an integer"]
    if t in kinds and not isinstance(value, kinds[t]):
        return [f"{path}: not {t}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} not in enum")
    if "const" in schema and value != schema["const"]:
        errs.append(f"{path}: not {schema['const']!r}")
    if t == "object":
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                errs += _structural_errors(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}.{k}: unknown key")
            elif isinstance(schema.get("additionalProperties"), dict):
                errs += _structural_errors(v, schema["additionalProperties"], f"{path}.{k}")
        errs += [f"{path}.{r}: missing" for r in schema.get("required", []) if r not in value]
    if t == "array":
        errs += [e for i, v in enumerate(value) for e in _structural_errors(v, schema["items"], f"{path}[{i}]")]
    return errs


def test_example_policy_validates_against_the_schema():
    load_policy(EXAMPLE)  # the validator accepts it
    raw = yaml.safe_load(EXAMPLE.read_text())
    schema = policy_schema()
    assert _structural_errors(raw, schema) == []
    bad = {**raw, "checks": [{"metric": "x", "maxx": 3}], "audits": {"curvature": {"method": "lanczoss"}}}
    errs = _structural_errors(bad, schema)
    assert any("maxx" in e for e in errs) and any("method" in e for e in errs)
    try:
        import jsonschema
    except ImportError:
        pytest.skip("jsonschema not installed (structure checked above)")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(raw, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
