#!/bin/sh
# test-man.sh: every command and long option of --help is in blkmig(1) and the README, and back.
# Usage: test-man.sh BLKMIG MANPAGE README   (prints TAP)
set -u
blkmig=$1 man=$2 readme=$3
export LC_ALL=C
n=0 failed=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
check() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; }

# Long options of one command, from --help, sorted.
help_options() { "$blkmig" "$1" --help | sed -n 's/^  \(-[a-zA-Z], \)\{0,1\}--\([a-z-]*\).*/\2/p' | grep -v '^help$' | sort -u; }
# Long options of one command's section of the man page (roff escapes \- removed).
man_options() {
    sed -n "/^\.SS \"blkmig $1\"/,/^\.S[SH] /p" "$man" | sed 's/\\-/-/g' |
        sed -n 's/^\\fB\(-[a-zA-Z], \)\{0,1\}--\([a-z-]*\).*/\2/p' | sort -u
}

commands=$("$blkmig" --help | sed -n '/^Commands:/,/^$/p' | sed -n 's/^  \([a-z-]*\) .*/\1/p')
check "blkmig --help lists commands" '[ -n "$commands" ]'
for c in $commands; do
    h=$(help_options "$c") m=$(man_options "$c")
    check "$c: a section in the man page" 'grep -q "^\.SS \"blkmig $c\"" "$man"'
    check "$c: options of --help and the man page agree" '[ -n "$h" ] && [ "$h" = "$m" ]'
    [ "$h" = "$m" ] || { echo "# --help: $(echo $h)"; echo "# man:    $(echo $m)"; }
    check "$c: in the README" 'grep -q "blkmig $c\|\`$c\`" "$readme"'
done
for s in "EXIT STATUS" COOKIE EVENTS EXAMPLES; do
    check "man page has $s" 'grep -q "^\.SH \"\{0,1\}$s" "$man"'
done
echo "1..$n"
[ "$failed" -eq 0 ]
