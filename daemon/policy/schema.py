"""JSON Schema of policy files, generated from the models so it cannot drift from them.

`python -m hush.daemon.policy.schema > policies/schema.json` rewrites the committed copy; a test
checks they are equal. Editors (yaml-language-server) use it for completion and checking.
"""

from __future__ import annotations

import json
from typing import Any

from .model import Policy

SCHEMA_ID = "https://hush.invalid/policies/schema.json"


def policy_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "Hush policy", **schema}


def schema_text() -> str:
    return json.dumps(policy_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
