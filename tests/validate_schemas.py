#!/usr/bin/env python3
"""Validates JSON documents against the schemas vendored under tests/data/schemas, or HTTP
responses against the service's OpenAPI document.

    validate_schemas.py sarif|spdx|cyclonedx FILE...
    validate_schemas.py openapi OPENAPI.json CASES.json

CASES.json is a list of {"method", "path" (the documented template), "status", "body"}: each
body must validate against the schema the document gives for that operation and status (which
must be documented). The document's own examples are validated as well.

Prints every violation and exits 1 if any file is invalid. Needs the `jsonschema` package
(installed by scripts/install-test-deps.sh).
"""
import json
import pathlib
import sys

from jsonschema import validators
from referencing import Registry, Resource

SCHEMAS = pathlib.Path(__file__).resolve().parent / "data" / "schemas"
MAIN = {
    "sarif": SCHEMAS / "sarif-2.1.0.json",
    "spdx": SCHEMAS / "spdx-2.3.schema.json",
    "cyclonedx": SCHEMAS / "cyclonedx" / "bom-1.5.schema.json",
}


def registry():
    resources = []
    for path in (SCHEMAS / "cyclonedx").glob("*.json"):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


def openapi(doc_path, cases_path):
    """Validates observed responses, and the document's examples, against an OpenAPI 3.1 document
    (whose schemas are JSON Schema 2020-12)."""
    doc = json.loads(pathlib.Path(doc_path).read_text())
    cls = validators.Draft202012Validator

    def resolve(node):
        while isinstance(node, dict) and "$ref" in node and len(node) == 1:
            target = doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node

    def check(schema, instance):
        # Refs point at #/components/...: validate inside a root that carries the components.
        root = {"allOf": [schema], "components": doc.get("components", {})}
        cls.check_schema(root)
        return sorted(cls(root).iter_errors(instance), key=lambda e: list(e.path))

    problems = []
    examples = 0
    for template, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            bodies = [("requestBody", resolve(op.get("requestBody", {})))]
            bodies += [(code, resolve(r)) for code, r in op.get("responses", {}).items()]
            for where, holder in bodies:
                for media, content in (holder or {}).get("content", {}).items():
                    if "example" in content and "schema" in content:
                        examples += 1
                        for e in check(content["schema"], content["example"])[:5]:
                            problems.append(f"example {method.upper()} {template} {where} {media}: "
                                            f"{'/'.join(str(p) for p in e.path)}: {e.message[:300]}")
    cases = json.loads(pathlib.Path(cases_path).read_text())
    for case in cases:
        label = f"{case['method']} {case['path']} -> {case['status']}"
        op = doc["paths"].get(case["path"], {}).get(case["method"].lower())
        if op is None:
            problems.append(f"{label}: operation not documented")
            continue
        response = resolve(op.get("responses", {}).get(str(case["status"])))
        if response is None:
            problems.append(f"{label}: status not documented")
            continue
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            problems.append(f"{label}: no application/json schema documented")
            continue
        for e in check(schema, case["body"])[:10]:
            problems.append(f"{label}: {'/'.join(str(p) for p in e.path)}: {e.message[:300]}")
    for p in problems:
        print(p)
    print(f"{examples} examples checked; {len(cases)} responses checked")
    if not problems:
        print(f"{len(cases)} responses valid")
    return 1 if problems else 0


def main(argv):
    if len(argv) == 4 and argv[1] == "openapi":
        return openapi(argv[2], argv[3])
    if len(argv) < 3 or argv[1] not in MAIN:
        print(__doc__, file=sys.stderr)
        return 2
    schema = json.loads(MAIN[argv[1]].read_text())
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, registry=registry())
    bad = 0
    for name in argv[2:]:
        instance = json.loads(pathlib.Path(name).read_text())
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        for e in errors[:20]:
            print(f"{name}: {'/'.join(str(p) for p in e.path)}: {e.message[:300]}")
        if errors:
            bad += 1
    print(f"{len(argv) - 2 - bad} valid, {bad} invalid")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
