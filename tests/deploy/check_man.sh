#!/usr/bin/env bash
# check_man.sh - ctest deploy.man (tests/CMakeLists.txt):
#   check_man.sh SOURCE_DIR BINARY_DIR
# 1. Lint: `mandoc -Tlint -W warning` is silent (exit 0) on every man page
#    (*.1, *.8) under signer/, client/ and audit/: no warnings, no errors.
# 2. Drift guard: for each program built in BINARY_DIR, every long option
#    (--name) that its help texts print, and every command (and jwt-sign admin
#    action) they list, appears in the rendered man page. The help texts read
#    are the program's --help and, where it has commands, each command's
#    --help (jwt-sign: also each admin action's), so an option that only a
#    command's help names is covered too.
#      jwt-signerd  signer/jwt-signerd.8
#      jwt-sign     client/jwt-sign.1
#      jwt-audit    audit/jwt-audit.1
#      jwt-load     client/jwt-load.1   (only when both the binary and the page
#                                        exist; the program is newer than this
#                                        check)
#    Exceptions: none. An option of another program quoted in a help text
#    (jwt-sign's help shows `jwt-audit verify --pubkey` and `basenc
#    --base64url` in examples) must appear in the page too, in the same
#    example or context.
# Needs the built programs and mandoc (Debian's mandoc package).
set -euo pipefail

usage="usage: check_man.sh SOURCE_DIR BINARY_DIR"
src="$(cd "${1:?$usage}" && pwd)"
bin="$(cd "${2:?$usage}" && pwd)"

if ! command -v mandoc >/dev/null; then
    echo "check_man.sh: mandoc not found: install Debian's mandoc package (scripts/deps.sh)" >&2
    exit 1
fi

failures=0
fail() {
    echo "check_man.sh: FAIL: $*" >&2
    failures=$((failures + 1))
}

# ---- 1. lint ---------------------------------------------------------------
pages=()
while IFS= read -r -d '' p; do
    pages+=("$p")
done < <(find "$src/signer" "$src/client" "$src/audit" -type f -name '*.[18]' -print0 | sort -z)
[[ ${#pages[@]} -gt 0 ]] || fail "no man pages (*.1, *.8) under signer/, client/, audit/"
for p in "${pages[@]}"; do
    rel="${p#"$src"/}"
    if out="$(mandoc -Tlint -W warning "$p" 2>&1)" && [[ -z "$out" ]]; then
        echo "ok: mandoc -Tlint -W warning $rel"
    else
        fail "mandoc -Tlint -W warning $rel:"
        printf '%s\n' "$out" >&2
    fi
done

# ---- 2. drift guard ----------------------------------------------------------

# The page as a reader sees it: rendered wide (width 1000) so lines rarely
# break, overstrike (bold, underline) removed, and a word broken after a
# hyphen at a line end joined again, so `--accept-audit-` + `loss` on the
# next line still reads --accept-audit-loss.
render() {
    mandoc -Tascii -O width=1000 "$1" | sed -e 's/.\x08//g' |
        awk '{ sub(/^[ \t]+/, "", $0) }
             held != "" { $0 = held $0; held = "" }
             /[A-Za-z0-9]-$/ { held = $0; next }
             { print }
             END { if (held != "") print held }'
}

# contains TEXT WORD: WORD occurs in TEXT delimited by anything but
# [A-Za-z0-9_-] (so --key is not found inside --key-name).
contains() {
    local re
    re="$(printf '%s' "$2" | sed -e 's/[][\.*^$]/\\&/g')"
    grep -Eq -- "(^|[^A-Za-z0-9_-])${re}([^A-Za-z0-9_-]|\$)" <<<"$1"
}

# Long options a help text prints: --name, lower case, digits and dashes.
long_options() {
    grep -oE -- '(^|[^A-Za-z0-9_-])--[a-z][a-z0-9-]*' | sed -e 's/^[^-]*//' | sort -u
}

# Lines "  word[, word...]" (two-space indent) of the section that starts with
# the line HEADER in a help text, up to its first blank line: the command or
# action names. Prints one name a line.
section_names() {
    awk -v header="$1" '
        $0 == header { on = 1; next }
        on && /^[[:space:]]*$/ { exit }
        on && /^  [a-z]/ {
            line = substr($0, 3)
            while (match(line, /^[a-z][a-z0-9-]*/)) {
                print substr(line, 1, RLENGTH)
                line = substr(line, RLENGTH + 1)
                if (line !~ /^, /) break
                line = substr(line, 3)
            }
        }'
}

# help PROGRAM ARGS...: PROGRAM ARGS... --help into $help_out; it must exit 0
# and print something. (A variable, not $(help ...): fail must count here.)
help_out=""
help() {
    local prog="$1"
    shift
    if ! help_out="$("$bin/$prog" "$@" --help 2>&1)"; then
        fail "$prog${*:+ $*} --help exits non-zero"
    elif [[ -z "$help_out" ]]; then
        fail "$prog${*:+ $*} --help prints nothing"
    fi
}

# check PROGRAM PAGE HELP_TEXT NAMES: every long option of HELP_TEXT and every
# name in NAMES (commands, actions; one a line) appears in PAGE.
check() {
    local prog="$1" page="$2" text="$3" names="$4" rendered opt n missing=0
    rendered="$(render "$src/$page")"
    while IFS= read -r opt; do
        [[ -n "$opt" ]] || continue
        if ! contains "$rendered" "$opt"; then
            fail "$prog prints option $opt in its help, $page does not name it"
            missing=1
        fi
    done < <(long_options <<<"$text")
    while IFS= read -r n; do
        [[ -n "$n" ]] || continue
        if ! contains "$rendered" "$n"; then
            fail "$prog lists command/action '$n' in its help, $page does not name it"
            missing=1
        fi
    done <<<"$names"
    local nopt
    nopt="$(long_options <<<"$text" | grep -c . || true)"
    [[ $missing -eq 0 ]] &&
        echo "ok: $page names all $nopt long options$( [[ -n "$names" ]] && printf ' and %s commands/actions' "$(grep -c . <<<"$names")") of $prog's help"
    return 0
}

need_bin() {
    if [[ ! -x "$bin/$1" ]]; then
        fail "$bin/$1 not built (build the project before this test)"
        return 1
    fi
}

# jwt-signerd: --help; its commands are the words after "jwt-signerd " on the
# usage lines that are not options.
if need_bin jwt-signerd; then
    help jwt-signerd
    text="$help_out"
    names="$(grep -oE '^(usage:)?[[:space:]]+jwt-signerd [a-z][a-z-]*' <<<"$text" | awk '{ print $NF }' | sort -u)"
    check jwt-signerd signer/jwt-signerd.8 "$text" "$names"
fi

# jwt-sign: --help, each command's and each admin action's.
if need_bin jwt-sign; then
    help jwt-sign
    text="$help_out"
    cmds="$(section_names "Commands:" <<<"$text")"
    [[ -n "$cmds" ]] || fail "jwt-sign --help: no 'Commands:' section found (help text changed? update check_man.sh)"
    for c in $cmds; do
        help jwt-sign "$c"
        text+=$'\n'"$help_out"
    done
    help jwt-sign admin
    actions="$(section_names "Actions:" <<<"$help_out")"
    [[ -n "$actions" ]] || fail "jwt-sign admin --help: no 'Actions:' section found (help text changed? update check_man.sh)"
    for a in $actions; do
        help jwt-sign admin "$a"
        text+=$'\n'"$help_out"
    done
    check jwt-sign client/jwt-sign.1 "$text" "$cmds"$'\n'"$actions"
fi

# jwt-audit: --help and each command's.
if need_bin jwt-audit; then
    help jwt-audit
    text="$help_out"
    cmds="$(section_names "commands:" <<<"$text")"
    [[ -n "$cmds" ]] || fail "jwt-audit --help: no 'commands:' section found (help text changed? update check_man.sh)"
    for c in $cmds; do
        help jwt-audit "$c"
        text+=$'\n'"$help_out"
    done
    check jwt-audit audit/jwt-audit.1 "$text" "$cmds"
fi

# jwt-load: only once both the program and its page exist.
if [[ -x "$bin/jwt-load" && -f "$src/client/jwt-load.1" ]]; then
    help jwt-load
    check jwt-load client/jwt-load.1 "$help_out" ""
else
    echo "skip: jwt-load (binary $([[ -x "$bin/jwt-load" ]] && echo present || echo absent), client/jwt-load.1 $([[ -f "$src/client/jwt-load.1" ]] && echo present || echo absent))"
fi

if [[ $failures -ne 0 ]]; then
    echo "check_man.sh: $failures failure(s)" >&2
    exit 1
fi
echo "check_man.sh: all man page checks passed"
