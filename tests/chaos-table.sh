#!/usr/bin/env bash
# Prints the fault suite's rows (written by the tests through colony_e2e::chaos::record) as one
# table, and fails if any fault lost, doubled or left something stuck.
set -euo pipefail
dir="${CHAOS_REPORT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/chaos}"
shopt -s nullglob
files=("$dir"/*.tsv)
if [ ${#files[@]} -eq 0 ]; then echo "fault suite: no rows recorded in $dir"; exit 0; fi
cat "${files[@]}" | awk -F'\t' '
  BEGIN { printf "%-58s %8s %5s %7s %5s  %s\n", "fault", "injected", "lost", "doubled", "stuck", "figures";
          bad = 0 }
  { printf "%-58s %8d %5d %7d %5d  %s\n", substr($1, 1, 58), $2, $3, $4, $5, $6;
    inj += $2; lost += $3; dbl += $4; stk += $5 }
  END { printf "%-58s %8d %5d %7d %5d\n", "total", inj, lost, dbl, stk;
        if (lost + dbl + stk > 0) exit 1 }'
