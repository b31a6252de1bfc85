#!/usr/bin/env bash
# Property-based API test of a live Switchyard server against its OpenAPI document, with
# schemathesis (pinned in tests/python/requirements.txt; scripts/setup-test-env.sh installs it
# into .venv).
#
#   BASE_URL=http://127.0.0.1:8080 API_KEY=sk-... tests/python/run_schemathesis.sh [extra args]
#
# BASE_URL  the server, e.g. http://127.0.0.1:8080 (required)
# API_KEY   a key with the inference and admin scopes (and metrics when metrics_auth is on),
#           sent as `Authorization: Bearer` (required)
# SCHEMA    the OpenAPI document (default: server/openapi.json of this checkout)
# MAX_EXAMPLES       fuzzed examples per operation (default 10)
# CHAT_MAX_EXAMPLES  fuzzed examples of POST /v1/chat/completions (default 20)
# CHAT_COVERAGE      `negative` (default) or `all`: the coverage phase sends every boundary case
#                    the schema defines; for chat only its invalid ones by default, since each
#                    valid one runs the model (about 100 generations: minutes on a CPU)
# REQUEST_TIMEOUT    seconds per request (default 120: a chat request runs a real CPU model)
# SCHEMATHESIS       the executable (default: .venv/bin/schemathesis, else on PATH)
# Extra arguments go to `schemathesis run` as they are (e.g. --exclude-path /openapi.json,
# --seed N, --report junit --report-dir DIR).
#
# Checks: no 5xx; only documented status codes, content types and headers; bodies (JSON, and
# each SSE event of a stream) that match the documented schemas; schema-violating requests
# refused; other methods 405 with `Allow`; no access without a key; a deleted document is gone.
# Left out: max_response_time (a CPU model is slow by nature), positive_data_acceptance (the
# server is stricter than any static schema can say: max_tokens_cap, max_body_bytes and
# max_messages are configuration, and tool names must be unique, a `rag` request needs a user
# message, ...), object_level_authorization (needs a second key's resources; tenant isolation
# has its own test). Exit status: non-zero on any failure or error.
#
# Serve the server under test with small limits so the run stays in minutes and no request
# reaches a long prompt, e.g.
#   --max-tokens-cap 16 --default-max-tokens 16 --max-body-bytes 4096 --max-messages 8
#   --default-route simple --rag-top-k 1
# and a throwaway --index-dir (the run adds and deletes documents). A body over max_body_bytes
# is 413, which the negative check accepts as a refusal.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

: "${BASE_URL:?set BASE_URL, e.g. http://127.0.0.1:8080}"
: "${API_KEY:?set API_KEY to a key with the inference and admin scopes}"
SCHEMA="${SCHEMA:-$root/server/openapi.json}"
MAX_EXAMPLES="${MAX_EXAMPLES:-10}"
CHAT_MAX_EXAMPLES="${CHAT_MAX_EXAMPLES:-20}"
CHAT_COVERAGE="${CHAT_COVERAGE:-negative}"
REQUEST_TIMEOUT="${REQUEST_TIMEOUT:-120}"
if [ -z "${SCHEMATHESIS:-}" ]; then
  if [ -x "$root/.venv/bin/schemathesis" ]; then
    SCHEMATHESIS="$root/.venv/bin/schemathesis"
  else
    SCHEMATHESIS=schemathesis
  fi
fi
case "$CHAT_COVERAGE" in
  negative | all) ;;
  *) echo "CHAT_COVERAGE must be negative or all, not $CHAT_COVERAGE" >&2; exit 2 ;;
esac

# Caches and Hypothesis' files go to a scratch folder, not the caller's directory.
work="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-schemathesis.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export HYPOTHESIS_STORAGE_DIRECTORY="$work/hypothesis"
cat >"$work/schemathesis.toml" <<EOF
[cache]
enabled = false

# Reproducers keep fields such as max_tokens readable; the Authorization header stays hidden.
[output.sanitization]
sensitive-markers = ["secret", "password", "passwd", "credential", "session"]

[checks.negative_data_rejection]
# The defaults, and 413: a body over max_body_bytes is refused before its fields are read.
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[[operations]]
include-path = "/v1/chat/completions"
generation.max-examples = $CHAT_MAX_EXAMPLES
phases.coverage.generation.mode = "$CHAT_COVERAGE"
EOF

status=0
"$SCHEMATHESIS" --config-file "$work/schemathesis.toml" run "$SCHEMA" \
  --url "$BASE_URL" \
  --header "Authorization: Bearer $API_KEY" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,allow_header_conformance,use_after_free,ensure_resource_availability,ignored_auth \
  --max-examples "$MAX_EXAMPLES" \
  --request-timeout "$REQUEST_TIMEOUT" \
  --workers 1 \
  --generation-database none \
  --no-color \
  "$@" || status=$?
exit "$status"
