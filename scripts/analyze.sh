#!/usr/bin/env bash
# analyze.sh - the Clang static analyzer (clang-tidy's clang-analyzer-* checks)
# over our C sources; `make lint` runs it. It needs the compilation database a
# CMake configure writes (CMAKE_EXPORT_COMPILE_COMMANDS) and the generated
# protobuf headers, so it configures BUILD_DIR and builds the proto targets only.
#
# Analysed: the product (signer client policy audit lib, whichever exist).
# Not analysed: generated code (BUILD_DIR/gen, not ours) and tests/ (cmocka's
# assert_* are not noreturn to the analyzer, so every test reports paths past
# a failed assertion). Checks left out: security.insecureAPI.
# DeprecatedOrUnsafeBufferHandling (wants C11 Annex K memcpy_s, which glibc
# does not have; it flags every memcpy/memset) and optin.performance.Padding
# (struct layout, not a defect).
#
# Any finding fails the run. A false positive gets a model under
# #ifdef __clang_analyzer__ (err.h, yamldoc.h, yamldoc.c, jwtsigner_client.c:
# the error setters never return OK, which the analyzer cannot see across
# files or through a variadic function) or a
# NOLINTNEXTLINE(clang-analyzer-CHECK) with the reason on the line above.
#
# Usage: scripts/analyze.sh [BUILD_DIR]      (default build; JOBS=N, default nproc)
set -euo pipefail

cd "$(dirname "$0")/.."
build="${1:-build}"
jobs="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
tidy="$(command -v clang-tidy-14 || command -v clang-tidy || true)"
if [[ -z "$tidy" ]]; then
    echo "analyze.sh: clang-tidy not found (Debian 12: apt-get install clang-tidy; scripts/deps.sh)" >&2
    exit 1
fi
checks='-*,clang-analyzer-*'
checks+=',-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling'
checks+=',-clang-analyzer-optin.performance.Padding'

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo --log-level=WARNING >/dev/null
cmake --build "$build" --target jwtsigner_proto externaljwt_proto -j "$jobs" >/dev/null

root="$(pwd)"
mapfile -t files < <(grep -oP '^\s*"file": "\K[^"]+' "$build/compile_commands.json" |
    grep -E "^$root/(signer|client|policy|audit|lib)/" | sort -u)
if [[ ${#files[@]} -eq 0 ]]; then
    echo "analyze.sh: no sources in $build/compile_commands.json" >&2
    exit 1
fi

echo "clang-tidy --checks='$checks' <${#files[@]} files> (-j $jobs)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
printf '%s\0' "${files[@]}" |
    xargs -0 -n 1 -P "$jobs" "$tidy" -p "$build" --quiet --checks="$checks" \
        --warnings-as-errors='*' >"$log" 2>&1 || status=$?
# clang-tidy's own chatter ("N warnings generated.") is not a finding.
grep -vE '^[0-9]+ (warning|error)s? (and [0-9]+ (warning|error)s? )?generated\.$' "$log" || true
if [[ $status -ne 0 ]]; then
    echo "analyze.sh: the static analyzer has findings (above)" >&2
    exit 1
fi
echo "analyze.sh: clean (${#files[@]} files)"
