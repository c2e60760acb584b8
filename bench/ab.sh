#!/bin/bash
# bench/ab.sh — A/B of two Pigeon source trees under the same smtp-source load, runs alternating.
#
# Usage: bench/ab.sh SESSIONS MESSAGES ROUNDS A_TREE B_TREE
#   A_TREE, B_TREE: directories that hold a `src/` (e.g. `git archive HEAD src | tar -x -C A`
#   for the committed code, and the work tree for the change). Each round runs A, B, B, A, so a
#   machine whose speed drifts weighs on both alike; the medians of the runs are printed.
#
# One run: a fresh data directory, `pigeon serve` with 2 SMTP processes on 127.0.0.1:$AB_PORT
# (default 2725), a warm-up of 200 messages, then MESSAGES 10 KB messages with smtp-source, one
# per connection. Printed per build: acceptance messages/s (generator's view), server CPU ms per
# message (user+sys of the server and its workers, from /proc), and end-to-end messages/s
# (until every message is in Maildir new/).
#
# AB_EXTRA_A / AB_EXTRA_B: TOML appended to that build's configuration (printf %b: "\n" is a
# newline), e.g. AB_EXTRA_B='[inbound]\ntrusted_networks = ["127.0.0.1/32"]\n' to trust the
# load as bench/run.py does, for a tree that knows the key (an older tree refuses it).
#
# Needs smtp-source (Debian's postfix; bench/setup-postfix.sh installs it) and the project's
# .venv (make install). Loopback only; it stops only the servers it started, by PID, and
# deletes its data directories at the end. Run nothing else meanwhile: it measures the machine.
set -eu

[ $# -eq 5 ] || { sed -n '2,8p' "$0"; exit 2; }
SESS=$1; N=$2; ROUNDS=$3
for t in "$4" "$5"; do
  [ -d "$t/src/pigeon" ] || { echo "bench/ab.sh: $t has no src/pigeon" >&2; exit 2; }
done
A=$(cd "$4" && pwd); B=$(cd "$5" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${AB_PYTHON:-$HERE/../.venv/bin/python}
PORT=${AB_PORT:-2725}
WORK=$(mktemp -d /tmp/pigeon-ab.XXXXXX)
SERVER=""  # the server of the run under way: stopped, by its PID, however the script ends
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT
RESULTS=$WORK/results

cpu_ticks() { for p in "$@"; do awk '{print $14+$15}' "/proc/$p/stat"; done | paste -sd+ | bc; }

run() { # $1 = A|B, $2 = its tree
  local d pid pids c0 c1 t0 t1 t2 n i
  d=$WORK/run.$(date +%s%N); mkdir -p "$d/data"
  cat > "$d/pigeon.toml" <<T
hostname = "pigeon.bench.test"
data_dir = "$d/data"
domains = ["bench.test"]
[listen]
smtp = ["127.0.0.1:$PORT"]
[limits]
max_connections = 1100
max_connections_per_ip = 1100
[smtp]
processes = 2
[inbound]  # smtp-source sends from bench.test, a local domain: trusted, as run.py does
trusted_networks = ["127.0.0.1/32"]
T
  if [ "$1" = A ]; then printf '%b' "${AB_EXTRA_A:-}"; else printf '%b' "${AB_EXTRA_B:-}"; fi >> "$d/pigeon.toml"
  echo pw | PYTHONPATH=$2/src "$PY" -m pigeon --config "$d/pigeon.toml" user add bench@bench.test --password-stdin >/dev/null 2>&1
  PYTHONPATH=$2/src "$PY" -m pigeon --config "$d/pigeon.toml" serve > "$d/serve.log" 2>&1 &
  pid=$!; SERVER=$pid
  for i in $(seq 100); do grep -q "pigeon started" "$d/serve.log" && break; sleep 0.1; done
  smtp-source -s "$SESS" -m 200 -l 10240 -f from@bench.test -t bench@bench.test "127.0.0.1:$PORT"
  pids="$pid $(pgrep -f 'pigeon.* (smtp-)?worker ' -P "$pid" | tr '\n' ' ')"  # 'worker' (app.worker), 'smtp-worker' before it
  c0=$(cpu_ticks $pids)
  t0=$(date +%s.%N)
  smtp-source -s "$SESS" -m "$N" -l 10240 -f from@bench.test -t bench@bench.test "127.0.0.1:$PORT"
  t1=$(date +%s.%N)
  for i in $(seq 3000); do
    n=$(ls "$d/data/mail/bench.test/bench/new" | wc -l)
    [ "$n" -ge $((N + 200)) ] && break
    sleep 0.01
  done
  t2=$(date +%s.%N)
  c1=$(cpu_ticks $pids)
  python3 -c "print('$1 %.0f %.3f %.0f' % ($N/($t1-$t0), ($c1-$c0)*1000/$(getconf CLK_TCK)/$N, $N/($t2-$t0)))" >> "$RESULTS"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  SERVER=""
  rm -rf "$d"
}

for _ in $(seq "$ROUNDS"); do run A "$A"; run B "$B"; run B "$B"; run A "$A"; done
python3 - "$RESULTS" <<'P'
import statistics as st
import sys
rows = [line.split() for line in open(sys.argv[1])]
for k in "AB":
    r = [float(x[1]) for x in rows if x[0] == k]
    c = [float(x[2]) for x in rows if x[0] == k]
    e = [float(x[3]) for x in rows if x[0] == k]
    print(f"{k}: accept {st.median(r):.0f} msg/s ({' '.join(f'{x:.0f}' for x in r)}), "
          f"CPU {st.median(c):.2f} ms/msg, end-to-end {st.median(e):.0f} msg/s")
P
