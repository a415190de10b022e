#!/bin/sh
# Renders the Alertmanager configuration template (alertmanager.yml) from the environment and
# writes the result:
#
#   render-config.sh TEMPLATE OUTPUT
#
# - every `$` + `{NAME}` placeholder is replaced by the value of the environment variable NAME
#   (empty when unset);
# - the lines between `# if NAME` and `# end NAME` are kept only when NAME is set and not empty,
#   so a receiver integration whose URL is not given is left out instead of failing.
#
# The docker-compose stack runs it as the Alertmanager container's entrypoint (POSIX sh and awk,
# both in the prom/alertmanager image); the tests render the same template with it.
set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 TEMPLATE OUTPUT" >&2
    exit 2
fi
awk '
function expand(line,    out, name) {
    out = ""
    while (match(line, /\$\{[A-Za-z_][A-Za-z0-9_]*\}/)) {
        name = substr(line, RSTART + 2, RLENGTH - 3)
        out = out substr(line, 1, RSTART - 1) ENVIRON[name]
        line = substr(line, RSTART + RLENGTH)
    }
    return out line
}
/^[ \t]*# if [A-Za-z_][A-Za-z0-9_]*[ \t]*$/ {
    if (skip == "" && ENVIRON[$3] == "") skip = $3
    next
}
/^[ \t]*# end [A-Za-z_][A-Za-z0-9_]*[ \t]*$/ {
    if (skip == $3) skip = ""
    next
}
skip != "" { next }
{ print expand($0) }
' "$1" >"$2.tmp"
mv "$2.tmp" "$2"
