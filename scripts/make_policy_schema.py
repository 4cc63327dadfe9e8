#!/usr/bin/env python3
"""Write docs/policy.schema.json, the JSON Schema of gate policies, from the validator."""

import json
from pathlib import Path

from lcnn_audit.gates.json_schema import policy_schema

OUT = Path(__file__).resolve().parents[1] / "docs" / "policy.schema.json"

if __name__ == "__main__":
    OUT.write_text(json.dumps(policy_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
