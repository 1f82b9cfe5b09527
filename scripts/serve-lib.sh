# Sourced by the scripts that start `modrwkv serve` in the background with --port 0 (and
# --metrics-port 0 or -1) and its stderr in a log file.
#   wait_ready PID LOG   waits up to 120 s for "msg=ready" (prints the log and fails if the server
#                        exits first), then sets $port and $metrics from the "listening" line.
wait_ready() {
  local pid=$1 log=$2
  for _ in $(seq 1 1200); do
    grep -q 'msg=ready' "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; return 1; }
    sleep 0.1
  done
  grep -q 'msg=ready' "$log" || { cat "$log"; echo "server not ready after 120 s" >&2; return 1; }
  port=$(grep -o 'grpc_port=[0-9]*' "$log" | head -1 | cut -d= -f2)
  metrics=$(grep -o 'metrics_port=[0-9-]*' "$log" | head -1 | cut -d= -f2)
}
