#!/usr/bin/env python3
"""HTTP API benchmarks against running servers (standard library only).

  prefix  N chat requests sharing one long system prompt (distinct questions), C at a time,
          streamed: TTFT p50/p90 and prompt tokens/s (all prompt tokens / wall time). Run it
          against a server with the prefix cache (default) and one with --prefix-cache-entries 0.
  fork    one request with n choices against n concurrent single requests (seeds s..s+n-1):
          wall time of each and whether the texts are identical.

  tools/bench_http.py prefix --url http://127.0.0.1:8000 --requests 16 --concurrency 4
  tools/bench_http.py fork --url http://127.0.0.1:8000 --n 8 --prompt-words 1000
"""
import argparse
import concurrent.futures as cf
import json
import statistics
import time
import urllib.request


def post(url, body, stream=False):
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=3600) as r:
        if not stream:
            return json.loads(r.read()), time.time() - t0, None
        ttft, usage = None, None
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                usage = ev["usage"]
            for c in ev.get("choices", []):
                if ttft is None and c.get("delta", {}).get("content"):
                    ttft = time.time() - t0
        return usage, time.time() - t0, ttft


def system_prompt(words):
    base = ("You are a careful assistant for a shipping company. You answer questions about "
            "routes, ports, cargo rules, customs forms and schedules, in short plain sentences. ")
    text = ""
    while len(text.split()) < words:
        text += base
    return text


def cmd_prefix(a):
    url = a.url + "/v1/chat/completions"
    system = system_prompt(a.system_words)

    def one(i):
        body = {"messages": [{"role": "system", "content": system},
                             {"role": "user", "content": f"Question {i}: which port is best?"}],
                "max_tokens": a.max_tokens, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        return post(url, body, stream=True)

    one(-1)  # warm (and, with the cache on, the first request fills it)
    t0 = time.time()
    with cf.ThreadPoolExecutor(a.concurrency) as ex:
        results = list(ex.map(one, range(a.requests)))
    wall = time.time() - t0
    ttfts = sorted(r[2] for r in results if r[2] is not None)
    prompt = sum(r[0]["prompt_tokens"] for r in results)
    cached = sum(r[0].get("prompt_tokens_details", {}).get("cached_tokens", 0) for r in results)
    print(json.dumps({"requests": a.requests, "concurrency": a.concurrency,
                      "prompt_tokens_each": results[0][0]["prompt_tokens"],
                      "cached_tokens": cached, "wall_s": round(wall, 2),
                      "ttft_p50_s": round(statistics.median(ttfts), 3),
                      "ttft_p90_s": round(ttfts[int(0.9 * (len(ttfts) - 1))], 3),
                      "prompt_tokens_per_s": round(prompt / wall, 1)}))


def cmd_fork(a):
    url = a.url + "/v1/completions"
    base = {"prompt": system_prompt(a.prompt_words), "max_tokens": a.max_tokens,
            "temperature": 1.0, "ignore_eos": True}
    post(url, dict(base, max_tokens=1))
    whole, t_fork, _ = post(url, dict(base, n=a.n, seed=1))
    t0 = time.time()
    with cf.ThreadPoolExecutor(a.n) as ex:
        singles = list(ex.map(lambda i: post(url, dict(base, n=1, seed=1 + i))[0], range(a.n)))
    t_sep = time.time() - t0
    same = all(singles[i]["choices"][0]["text"] == whole["choices"][i]["text"]
               for i in range(a.n))
    print(json.dumps({"n": a.n, "prompt_tokens": whole["usage"]["prompt_tokens"],
                      "max_tokens": a.max_tokens, "fork_s": round(t_fork, 2),
                      "separate_s": round(t_sep, 2), "speedup": round(t_sep / t_fork, 2),
                      "identical": same}))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prefix")
    p.add_argument("--url", required=True)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--system-words", type=int, default=1500)
    p.add_argument("--max-tokens", type=int, default=8)
    f = sub.add_parser("fork")
    f.add_argument("--url", required=True)
    f.add_argument("--n", type=int, default=8)
    f.add_argument("--prompt-words", type=int, default=1500)
    f.add_argument("--max-tokens", type=int, default=16)
    a = ap.parse_args()
    {"prefix": cmd_prefix, "fork": cmd_fork}[a.cmd](a)


if __name__ == "__main__":
    main()
