#!/usr/bin/env bash
# check-banned.sh - fail if our C sources call a banned function: the
# unbounded or unchecked C library calls curl's project bans too (strcpy
# strcat sprintf vsprintf gets atoi atol strtok sscanf).
# Comments, string and character literals are blanked first (line numbers
# kept), so prose mentioning a name does not trip the check.
#
# Usage: scripts/check-banned.sh [DIR|FILE]...   (default: lib signer client policy audit tests)
set -euo pipefail

cd "$(dirname "$0")/.."
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(lib signer client policy audit tests)

files=()
for t in "${targets[@]}"; do
    [[ -e "$t" ]] || continue
    while IFS= read -r -d '' f; do
        files+=("$f")
    done < <(find "$t" -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z)
done

if [[ ${#files[@]} -eq 0 ]]; then
    echo "check-banned: no C sources found"
    exit 0
fi

perl -e '
    use strict;
    use warnings;
    my $banned = qr/\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|strtok|sscanf)\s*\(/;
    my $hits = 0;
    for my $file (@ARGV) {
        open(my $fh, "<", $file) or die "check-banned: $file: $!\n";
        local $/;
        my $src = <$fh>;
        close($fh);
        # A backslash-newline continues a // comment in C; treat it as a line end
        # instead (may over-report, never under-reports).
        $src =~ s/\\\n/ \n/g;
        # Blank comments and literals, keeping their newlines.
        $src =~ s{(/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\x27(?:\\.|[^\x27\\\n])*\x27)}
                 {my $m = $1; my $n = ($m =~ tr/\n//); ($m =~ m{^/} ? " " : "\"\"") . ("\n" x $n)}gse;
        # Whole-file match, so "sprintf\n(" is caught too; the line is where the name is.
        while ($src =~ /$banned/g) {
            my $name = $1;
            my $line = 1 + (substr($src, 0, $-[0]) =~ tr/\n//);
            print "$file:$line: banned function $name()\n";
            $hits++;
        }
    }
    if ($hits) {
        print STDERR "check-banned: $hits banned call(s)\n";
        exit 1;
    }
    printf "check-banned: ok (%d files)\n", scalar @ARGV;
' "${files[@]}"
