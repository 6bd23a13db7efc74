#!/bin/sh
# table_size: one metric row per input table, `size` in $LMGEO_PARAM_UNIT,
# with the input's position as a dimension. lmgeo gives every parameter as
# LMGEO_PARAM_<NAME> and every input port as LMGEO_INPUT_<PORT> (one path a
# line); we write metrics.json into LMGEO_OUTPUT_DIR.
set -eu

case "$LMGEO_PARAM_UNIT" in
    B) divisor=1 ;;
    KiB) divisor=1024 ;;
    MiB) divisor=1048576 ;;
    *) echo "unknown unit $LMGEO_PARAM_UNIT" >&2; exit 2 ;;
esac

{
    printf '['
    index=0
    printf '%s\n' "$LMGEO_INPUT_TABLES" | while IFS= read -r path; do
        [ -n "$path" ] || continue
        bytes=$(wc -c < "$path")
        [ "$index" -eq 0 ] || printf ','
        printf '\n  {"metric": "size", "value": %s, "input": %d, "unit": "%s"}' \
            "$(awk -v b="$bytes" -v d="$divisor" 'BEGIN { printf "%.17g", b / d }')" \
            "$index" "$LMGEO_PARAM_UNIT"
        index=$((index + 1))
    done
    printf '\n]\n'
} > "$LMGEO_OUTPUT_DIR/metrics.json"
