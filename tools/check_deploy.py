#!/usr/bin/env python3
"""Checks of the rendered Kubernetes manifests against the server itself (scripts/check-deploy.sh).

  rules PROMETHEUSRULE OUT           the PrometheusRule's groups as a plain rules file (promtool)
  queries DASHBOARD ADAPTER OUT      every dashboard and adapter query as a recording rule, the
                                     Grafana variables and adapter templates filled in (promtool)
  names SCRAPE DASHBOARD RULES ADAPTER HPA_MANIFEST
                                     every metric the dashboard, alerts, adapter rules and HPA use
                                     is one the server exports (SCRAPE: a /metrics body)
  manifest RENDERED SERVE_HELP       the Deployment agrees with the server: flags in the ConfigMap,
                                     ports, grace period >= preStop + drain timeout + 3 s, health
                                     service names the server registers; prints, one per line,
                                     the probes as `grpc SERVICE` or `exec ARGV-as-JSON`
  env RENDERED                       the ConfigMap's MODRWKV_* settings as NAME=VALUE lines
Needs PyYAML.
"""
import json
import re
import sys

import yaml

# The health services the server registers (server/model_server.cc): "" is liveness, SERVING once
# the port is bound; modrwkv.v1.Inference is readiness.
HEALTH_SERVICES = {"", "modrwkv.v1.Inference", "modrwkv.v1.Sessions"}
METRIC = re.compile(r"\b(modrwkv_[a-z0-9_]+)")


def fail(msg):
    print(f"check_deploy: {msg}", file=sys.stderr)
    sys.exit(1)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs, kind, name=None):
    out = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if not out:
        fail(f"no {kind} {name or ''} in the rendered manifests")
    return out[0]


def dashboard_queries(path):
    with open(path) as f:
        dash = json.load(f)
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            out.append((f"variable {v['name']}", m.group(1) if m else q))
    return out


def fill_grafana(expr):
    return (expr.replace("$__rate_interval", "5m").replace('"$namespace"', '"prod"')
            .replace('"$pod"', '".*"'))


def adapter_queries(path):
    with open(path) as f:
        rules = yaml.safe_load(f)["rules"]
    out = []
    for r in rules:
        series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", r["seriesQuery"]).group(1)
        name = r.get("name", {}).get("as") or series
        q = (r["metricsQuery"].replace("<<.Series>>", series)
             .replace("<<.LabelMatchers>>", 'namespace="prod",pod=~"a|b"')
             .replace("<<.GroupBy>>", "pod"))
        out.append((f"adapter {name}", r["seriesQuery"]))
        out.append((f"adapter {name}", q))
    return out


def cmd_rules(src, out):
    rule = load_all(src)[0]
    with open(out, "w") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)


def cmd_queries(dashboard, adapter, out):
    rules = []
    for i, (where, q) in enumerate(dashboard_queries(dashboard) + adapter_queries(adapter)):
        rules.append({"record": f"check:query_{i}", "expr": fill_grafana(q),
                      "labels": {"source": where}})
    with open(out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}, f, sort_keys=False)
    print(f"{len(rules)} dashboard and adapter queries")


def cmd_names(scrape, dashboard, rules, adapter, manifest):
    exported = set()
    with open(scrape) as f:
        for line in f:
            if line and not line.startswith("#"):
                exported.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    used = {}  # metric -> where
    for where, q in dashboard_queries(dashboard):
        for m in METRIC.findall(q):
            used.setdefault(m, f"dashboard panel '{where}'")
    for g in load_all(rules)[0]["spec"]["groups"]:
        for r in g["rules"]:
            for m in METRIC.findall(r["expr"]):
                used.setdefault(m, f"alert {r.get('alert') or r.get('record')}")
    adapter_names = set()
    with open(adapter) as f:
        for r in yaml.safe_load(f)["rules"]:
            series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", r["seriesQuery"]).group(1)
            adapter_names.add(r.get("name", {}).get("as") or series)
            for m in METRIC.findall(r["seriesQuery"] + " " + r["metricsQuery"]):
                used.setdefault(m, f"adapter rule {series}")
    missing = sorted(f"{m} (in {w})" for m, w in used.items() if m not in exported)
    hpa = find(load_all(manifest), "HorizontalPodAutoscaler")
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] != "Pods":
            fail(f"HPA metric of type {metric['type']}: only Pods metrics from the adapter are checked")
        name = metric["pods"]["metric"]["name"]
        if name not in adapter_names:
            missing.append(f"{name} (in the HPA; no adapter rule serves it)")
    if missing:
        fail("metrics the server does not export:\n  " + "\n  ".join(missing))
    print(f"{len(used)} metric names used, all exported; HPA metrics "
          f"{', '.join(m['pods']['metric']['name'] for m in hpa['spec']['metrics'])} served by the adapter rules")


def duration_seconds(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", s)
    if not m:
        fail(f"cannot read the duration {s!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def cmd_manifest(rendered, serve_help):
    docs = load_all(rendered)
    with open(serve_help) as f:
        flags = set(re.findall(r"^\s+--(?:\[no-\])?([a-z0-9-]+)", f.read(), re.M))
    cm = find(docs, "ConfigMap", "modrwkv-flags")["data"]
    for key in cm:
        flag = key[len("MODRWKV_"):].lower().replace("_", "-") if key.startswith("MODRWKV_") else None
        if flag not in flags:
            fail(f"ConfigMap key {key} is not a `modrwkv serve` flag (MODRWKV_<FLAG>)")
    dep = find(docs, "Deployment", "modrwkv")
    pod = dep["spec"]["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "modrwkv")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if ports.get("grpc") != int(cm["MODRWKV_PORT"]) or ports.get("metrics") != int(cm["MODRWKV_METRICS_PORT"]):
        fail(f"container ports {ports} differ from MODRWKV_PORT / MODRWKV_METRICS_PORT in the ConfigMap")
    pre = c.get("lifecycle", {}).get("preStop", {})
    pre_s = 0
    if "exec" in pre and pre["exec"]["command"][0] == "sleep":
        pre_s = float(pre["exec"]["command"][1])
    elif "sleep" in pre:
        pre_s = float(pre["sleep"]["seconds"])
    drain = duration_seconds(cm.get("MODRWKV_DRAIN_TIMEOUT", "30s"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    # After the drain the process waits up to 2 s for the metrics endpoint (docs/operations.md).
    if grace < pre_s + drain + 3:
        fail(f"terminationGracePeriodSeconds {grace} < preStop {pre_s:g} s + drain timeout {drain:g} s + 3 s")
    print(f"grace period {grace} s >= preStop {pre_s:g} s + drain {drain:g} s + 3 s", file=sys.stderr)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(probe)
        if not p:
            fail(f"the container has no {probe}")
        handlers = [h for h in ("grpc", "exec", "httpGet", "tcpSocket") if h in p]
        if len(handlers) != 1:
            fail(f"{probe} has handlers {handlers}, expected exactly one")
        if "grpc" in p:
            service = p["grpc"].get("service", "")
            if p["grpc"]["port"] != int(cm["MODRWKV_PORT"]):
                fail(f"{probe} probes port {p['grpc']['port']}, the server listens on {cm['MODRWKV_PORT']}")
            if service not in HEALTH_SERVICES:
                fail(f"{probe} asks for health service {service!r}; the server registers {sorted(HEALTH_SERVICES)}")
            print(f"{probe} grpc {service}")
        elif "exec" in p:
            print(f"{probe} exec {json.dumps(p['exec']['command'])}")
        else:
            fail(f"{probe} is neither a gRPC nor an exec health check")
    if dep["spec"]["strategy"].get("rollingUpdate", {}).get("maxUnavailable") not in (0, "0", "0%"):
        fail("the rollout may take a replica down before its successor is ready (maxUnavailable)")


def cmd_env(rendered):
    for k, v in find(load_all(rendered), "ConfigMap", "modrwkv-flags")["data"].items():
        print(f"{k}={v}")


def main(argv):
    cmds = {"rules": (cmd_rules, 2), "queries": (cmd_queries, 3), "names": (cmd_names, 5),
            "manifest": (cmd_manifest, 2), "env": (cmd_env, 1)}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    cmds[argv[1]][0](*argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
