#!/usr/bin/env python3
"""Lists the non-test functions under a folder (default src/) longer than a limit (default 100
lines), from their `fn` line to their closing brace, longest first; exits 1 when there is one.

    scripts/long-functions.py [DIR] [LIMIT]

A reading of the text, not a parser: strings, char literals and comments are blanked before the
braces are counted, and everything from a `#[cfg(test)]` line to the end of its file is skipped.
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "src"
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 100
FN = re.compile(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)")


def code_of(line):
    line = re.sub(r'r#*"[^"]*"#*', '""', line)
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "' '", line)
    return re.sub(r"//.*", "", line)


found = []
for folder, _, files in os.walk(root):
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(folder, name)
        lines = open(path, encoding="utf-8").read().split("\n")
        i = 0
        while i < len(lines):
            if re.match(r"\s*#\[cfg\(test\)\]", lines[i]):
                break
            m = FN.match(lines[i])
            if not m:
                i += 1
                continue
            depth, started, j = 0, False, i
            while j < len(lines):
                code = code_of(lines[j])
                depth += code.count("{") - code.count("}")
                started = started or "{" in code
                if (started and depth <= 0) or (not started and code.rstrip().endswith(";")):
                    break
                j += 1
            if j - i + 1 > limit:
                found.append((j - i + 1, path, m.group(6)))
            i = j + 1
for n, path, fn in sorted(found, reverse=True):
    print(f"{n:5} {path} {fn}")
print(f"{len(found)} functions over {limit} lines")
sys.exit(1 if found else 0)
