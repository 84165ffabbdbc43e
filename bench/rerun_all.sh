#!/usr/bin/env bash
# Rerun every benchmark whose figures doc/performance.rst publishes, with
# the command each page names, one after the other (they measure
# throughput: run on a quiet machine, nothing else busy).
#
#   bash bench/rerun_all.sh [NAME ...]      (default: all of them)
#
# Names: wire handlespace registrar psk failover failover-tight enrp http
# counting fuzz interop attack.  Each one's output goes to
# bench/results/rerun/NAME.txt (the benchmarks also write their own
# result files under bench/results/), its wall time to
# bench/results/rerun/times.txt.  About 75 minutes for all on the
# project's 2-core machine; interop needs the SCTP guest
# (../shared/tools/sctp-vm) and RSPLIB's Debian packages.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-.venv/bin/python}
out=bench/results/rerun
mkdir -p "$out"

declare -A commands=(
  [wire]="$py bench/bench_wire.py --seconds 3"
  [handlespace]="$py bench/bench_handlespace.py"
  [registrar]="$py bench/bench_registrar.py --pes 1000,100000 --clients 1,16,128 --duration 5"
  [psk]="$py bench/bench_psk.py --seconds 5"
  [failover]="$py bench/bench_failover.py --runs 50"
  [failover-tight]="$py bench/bench_failover.py --runs 50 --tight"
  [enrp]="$py bench/bench_enrp.py --sizes 10000,100000 --repeat 3 --takeover-timers fast,default --takeover-repeat 3"
  [http]="$py bench/bench_http.py --pes 10000 --pools 100 --rate 1000 --duration 10 --repeat 5"
  [counting]="$py bench/bench_counting.py"
  [fuzz]="$py bench/fuzz.py --inputs 1000000 --seed 14 --jobs 2"
  [interop]="../shared/tools/sctp-vm --timeout 1800 $py bench/bench_interop.py --pes 1000,10000 --repeat 3 --duration 5"
  [attack]="$py bench/attack.py --all --json bench/results/attack.json"
)
order=(wire handlespace registrar psk failover failover-tight enrp http counting fuzz interop attack)
[ $# -gt 0 ] && order=("$@")

status=0
for name in "${order[@]}"; do
  command=${commands[$name]:-}
  if [ -z "$command" ]; then
    echo "rerun_all: no benchmark named $name" >&2
    status=2
    continue
  fi
  echo "== $name: $command"
  start=$(date +%s)
  $command > "$out/$name.txt" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  echo "$(date -u +%FT%TZ) $name rc=$rc ${took}s" >> "$out/times.txt"
  echo "   rc=$rc, ${took} s, output in $out/$name.txt"
  [ $rc -ne 0 ] && status=1
done
exit $status
