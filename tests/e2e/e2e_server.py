"""Starts `modrwkv serve` for the Python end-to-end tests: loopback, free gRPC and HTTP ports."""
import os
import re
import subprocess
import time


def start_server(cli, serve_args, log_path, timeout_s=120):
    """Runs `cli serve` with `serve_args` (the model and any extra flags) on free loopback ports,
    stderr to `log_path`; waits for "ready". Returns (process, grpc target, HTTP base URL)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [cli, "serve", *serve_args, "--host", "127.0.0.1", "--port", "0",
             "--metrics-port", "-1", "--http-port", "0"],
            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with open(log_path) as f:
            text = f.read()
        m = re.search(r'grpc_port"?[=:](\d+).*http_port"?[=:](\d+)', text)
        if m and re.search(r'msg"?[=:]"?ready', text):
            return proc, f"127.0.0.1:{m.group(1)}", f"http://127.0.0.1:{m.group(2)}/v1"
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({os.path.basename(log_path)}):\n" + text)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout_s} s")
