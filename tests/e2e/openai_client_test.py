#!/usr/bin/env python3
"""The HTTP API through the official `openai` Python package against the real server.

Starts `modrwkv serve --http-port 0` on a demo model, then checks, for the same greedy requests,
that the package's streamed and whole answers equal each other and the gRPC face's (through
`modrwkv client generate`), that n, logprobs, usage and errors come back in the package's types.
Run by ctest through tests/e2e/run_openai_client_test.sh (which provides the package)."""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import openai
from e2e_server import start_server

CLI = None
SERVER = None
BASE = None
GRPC = None
TMP = None


def setUpModule():
    global SERVER, BASE, GRPC, TMP
    TMP = tempfile.mkdtemp(prefix="modrwkv_openai_")
    subprocess.run([CLI, "make-demo-model", "--out", TMP, "--seed", "3"], check=True,
                   stdout=subprocess.DEVNULL)
    SERVER, GRPC, BASE = start_server(
        CLI, ["--model", os.path.join(TMP, "model.pth"), "--threads", "2",
              "--served-model-name", "demo"],
        os.path.join(TMP, "server.log"), timeout_s=60)


def tearDownModule():
    if SERVER:
        SERVER.terminate()
        SERVER.wait(timeout=30)
    shutil.rmtree(TMP, ignore_errors=True)


def grpc_generate(prompt, max_tokens):
    out = subprocess.run([CLI, "client", "generate", "--target", GRPC, "--prompt", prompt,
                          "--max-tokens", str(max_tokens), "--temperature", "0"],
                         check=True, capture_output=True)
    text = out.stdout.decode("utf-8")
    return text[:-1] if text.endswith("\n") else text


class OpenAiClientTest(unittest.TestCase):
    def setUp(self):
        self.client = openai.OpenAI(base_url=BASE, api_key="unused", max_retries=0)

    def test_completion_whole_and_streamed_equal_grpc_generate(self):
        prompt = "User: hello\n\nAssistant:"
        expected = grpc_generate(prompt, 40)
        self.assertTrue(expected)
        whole = self.client.completions.create(model="demo", prompt=prompt, max_tokens=40,
                                               temperature=0)
        self.assertEqual(whole.choices[0].text, expected)
        self.assertIn(whole.choices[0].finish_reason, ("length", "stop"))
        self.assertEqual(whole.usage.total_tokens,
                         whole.usage.prompt_tokens + whole.usage.completion_tokens)
        stream = self.client.completions.create(model="demo", prompt=prompt, max_tokens=40,
                                                temperature=0, stream=True)
        pieces = [c.choices[0].text for c in stream if c.choices]
        self.assertGreater(len(pieces), 1)  # it streamed
        self.assertEqual("".join(pieces), expected)

    def test_chat_whole_and_streamed_agree(self):
        messages = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Name a colour."}]
        whole = self.client.chat.completions.create(model="demo", messages=messages,
                                                    max_tokens=24, temperature=0)
        content = whole.choices[0].message.content
        self.assertEqual(whole.choices[0].message.role, "assistant")
        self.assertTrue(content)
        stream = self.client.chat.completions.create(
            model="demo", messages=messages, max_tokens=24, temperature=0, stream=True,
            stream_options={"include_usage": True})
        text, usage = "", None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
        self.assertEqual(text, content)
        self.assertIsNotNone(usage)
        self.assertEqual(usage.completion_tokens, whole.usage.completion_tokens)

    def test_n_logprobs_and_seed(self):
        r = self.client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
            temperature=1.0, seed=11, n=2, logprobs=True, top_logprobs=3)
        self.assertEqual(len(r.choices), 2)
        for c in r.choices:
            self.assertTrue(c.logprobs.content)
            for t in c.logprobs.content:
                self.assertLessEqual(t.logprob, 0.0)
                self.assertEqual(len(t.top_logprobs), 3)
        again = self.client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
            temperature=1.0, seed=11, n=2)
        self.assertEqual([c.message.content for c in again.choices],
                         [c.message.content for c in r.choices])

    def test_models_and_errors(self):
        self.assertEqual([m.id for m in self.client.models.list()], ["demo"])
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "x"}], temperature=9)
        self.assertEqual(e.exception.body["param"], "temperature")
        with self.assertRaises(openai.NotFoundError):
            self.client.completions.create(model="not-this-one", prompt="x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    args, rest = ap.parse_known_args()
    CLI = args.cli
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
