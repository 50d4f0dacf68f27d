#!/bin/sh
# gen-man.sh: builds blkmig(1) from `blkmig --help`, every `blkmig COMMAND --help` and docs/blkmig.1.in.
# Usage: gen-man.sh BLKMIG TEMPLATE > blkmig.1
set -eu
blkmig=$1
template=$2
export LC_ALL=C

roff_escape() { sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\&'/" -e 's/-/\\-/g'; }

# One command: its summary, then each option as a tagged paragraph.
command_section() {
    name=$1
    printf '.SS "blkmig %s"\n' "$name"
    "$blkmig" "$name" --help | awk '
        /^Usage:/ { state = "usage"; next }
        state == "usage" && NF == 0 { state = "summary"; next }
        state == "summary" && NF > 0 && !/Options:$/ { print "SUMMARY\t" $0; next }
        /Options:$/ { state = "options"; next }
        state == "options" && /^  -/ {
            line = $0; sub(/^  +/, "", line)
            split(line, parts, /  +/)
            print "OPTION\t" parts[1] "\t" parts[2]
        }' | while IFS="$(printf '\t')" read -r kind a b; do
        case $kind in
        SUMMARY) printf '%s\n' "$a" | roff_escape ;;
        OPTION)
            case $a in -h,*) continue ;; esac
            printf '.TP\n\\fB%s\\fR\n%s\n' "$(printf '%s' "$a" | roff_escape)" \
                "$(printf '%s' "$b" | roff_escape)" ;;
        esac
    done
}

commands=$("$blkmig" --help | sed -n '/^Commands:/,/^$/p' | sed -n 's/^  \([a-z-]*\) .*/\1/p')
while IFS= read -r line; do
    if [ "$line" = "@COMMANDS@" ]; then
        for c in $commands; do
            command_section "$c"
        done
    else
        printf '%s\n' "$line"
    fi
done < "$template"
