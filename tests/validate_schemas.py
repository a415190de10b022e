#!/usr/bin/env python3
"""Validates JSON documents against the schemas vendored under tests/data/schemas.

    validate_schemas.py sarif|spdx|cyclonedx FILE...

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


def main(argv):
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
