#!/usr/bin/env python3
"""Structured output through the real server: every answer parses and validates.

Serves the random-weight demo model and the trained vision demo (text only), asks both for
answers under several JSON Schemas (nested objects, $ref, enums, unions, arrays, lengths) and in
JSON mode, greedy and sampled, through the `openai` package; every answer must finish with
"stop", parse, and validate with the `jsonschema` package. Also: streamed = whole, the gRPC face
(`modrwkv client generate --json-schema`) = the HTTP face, and refusals name the schema keyword.
Run by ctest through tests/e2e/run_openai_client_test.sh (which provides the packages)."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import jsonschema
import openai
from e2e_server import start_server

CLI = None
SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TMP = None
SERVERS = {}  # name -> (process, http base, grpc target)

# Every value is bounded (string lengths, item counts; the matcher bounds numbers and
# whitespace), so each document ends within MAX_TOKENS whatever the model prefers.
MAX_TOKENS = 1024
SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer"},
            "email": {"type": ["string", "null"], "maxLength": 24},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                     "maxItems": 3},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "shapes": {
        "$defs": {"Point": {"type": "object",
                            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                            "required": ["x", "y"], "additionalProperties": False}},
        "type": "object",
        "properties": {
            "shape": {"enum": ["circle", "square", "triangle"]},
            "filled": {"type": "boolean"},
            "center": {"$ref": "#/$defs/Point"},
            "corners": {"type": "array", "items": {"$ref": "#/$defs/Point"},
                        "minItems": 1, "maxItems": 3},
        },
        "required": ["shape", "center", "corners"],
        "additionalProperties": False,
    },
    "mixed_list": {
        "type": "array",
        "items": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 5},
                            {"type": "null"}, {"type": "boolean"}]},
        "minItems": 2, "maxItems": 4,
    },
    # As pydantic writes a model with a nested model, a literal and descriptions.
    "pydantic_like": {
        "$defs": {"Address": {"properties": {
            "city": {"title": "City", "type": "string", "maxLength": 12},
            "zip": {"title": "Zip", "type": "string", "minLength": 5, "maxLength": 5}},
            "required": ["city", "zip"], "title": "Address", "type": "object"}},
        "properties": {
            "kind": {"const": "customer", "title": "Kind"},
            "address": {"allOf": [{"$ref": "#/$defs/Address"}],
                        "description": "where to deliver"},
            "score": {"title": "Score", "type": "number"},
        },
        "required": ["kind", "address", "score"],
        "title": "Customer", "type": "object",
    },
}


def serve(name, model_args):
    proc, grpc, http = start_server(
        CLI, [*model_args, "--threads", "1", "--served-model-name", name],
        os.path.join(TMP, f"{name}.log"))
    SERVERS[name] = (proc, http, grpc)


def setUpModule():
    global TMP
    TMP = tempfile.mkdtemp(prefix="modrwkv_structured_")
    subprocess.run([CLI, "make-demo-model", "--out", TMP, "--seed", "3"], check=True,
                   stdout=subprocess.DEVNULL)
    serve("random", ["--model", os.path.join(TMP, "model.pth")])
    serve("vision-demo", ["--model", os.path.join(SOURCE, "assets", "vision-demo")])


def tearDownModule():
    for proc, _, _ in SERVERS.values():
        proc.terminate()
        proc.wait(timeout=30)
    shutil.rmtree(TMP, ignore_errors=True)


def client(name):
    return openai.OpenAI(base_url=SERVERS[name][1], api_key="unused", max_retries=0)


def schema_format(name):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMAS[name]}}


class StructuredOutputTest(unittest.TestCase):
    def check_answer(self, content, finish_reason, schema, what):
        self.assertEqual(finish_reason, "stop", f"{what}: {content!r}")
        try:
            doc = json.loads(content)
        except json.JSONDecodeError as e:
            self.fail(f"{what}: not JSON ({e}): {content!r}")
        if schema is not None:
            try:
                jsonschema.validate(doc, schema)
            except jsonschema.ValidationError as e:
                self.fail(f"{what}: does not follow the schema ({e.message}): {content!r}")
        return doc

    def test_every_answer_follows_its_schema_greedy_and_sampled(self):
        prompt = [{"role": "user", "content": "Answer in JSON."}]
        for model in SERVERS:
            c = client(model)
            for name, schema in SCHEMAS.items():
                for temperature, seed in [(0, None), (1.0, 1), (1.0, 2), (0.7, 3)]:
                    r = c.chat.completions.create(
                        model=model, messages=prompt, max_tokens=MAX_TOKENS,
                        temperature=temperature, seed=seed,
                        response_format=schema_format(name))
                    self.check_answer(r.choices[0].message.content, r.choices[0].finish_reason,
                                      schema, f"{model}/{name}/T={temperature}/seed={seed}")

    def test_json_mode_answers_are_objects(self):
        completed = 0
        for model in SERVERS:
            for seed in range(1, 5):
                r = client(model).chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "Any JSON object."}],
                    max_tokens=MAX_TOKENS, temperature=1.0, seed=seed,
                    response_format={"type": "json_object"})
                choice = r.choices[0]
                if choice.finish_reason == "length":
                    continue  # free keys and strings have no bound: a document may not close
                doc = self.check_answer(choice.message.content, choice.finish_reason, None,
                                        f"{model}/json_object/seed={seed}")
                self.assertIsInstance(doc, dict)
                completed += 1
        self.assertGreater(completed, 0)

    def test_streamed_equals_whole_and_grpc_equals_http(self):
        c = client("random")
        # response_format is not a parameter of the package's completions: sent as an extra.
        kwargs = dict(model="random", prompt="The record:", max_tokens=MAX_TOKENS,
                      temperature=0, extra_body={"response_format": schema_format("shapes")})
        whole = c.completions.create(**kwargs)
        text = whole.choices[0].text
        self.check_answer(text, whole.choices[0].finish_reason, SCHEMAS["shapes"], "whole")
        streamed = "".join(ch.choices[0].text for ch in c.completions.create(**kwargs, stream=True)
                           if ch.choices)
        self.assertEqual(streamed, text)
        schema_file = os.path.join(TMP, "shapes.json")
        with open(schema_file, "w") as f:
            json.dump(SCHEMAS["shapes"], f)
        out = subprocess.run(
            [CLI, "client", "generate", "--target", SERVERS["random"][2], "--prompt",
             "The record:", "--max-tokens", str(MAX_TOKENS), "--temperature", "0",
             "--json-schema", schema_file], check=True, capture_output=True)
        grpc_text = out.stdout.decode("utf-8")
        self.assertEqual(grpc_text[:-1] if grpc_text.endswith("\n") else grpc_text, text)

    def test_refusals_name_the_schema_keyword(self):
        c = client("random")
        cases = [
            ({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}},
             "response_format.json_schema.schema.properties.age.minimum"),
            ({"type": "objekt"}, "response_format.json_schema.schema.type"),
            ({"type": "string", "pattern": "^a+$"}, "response_format.json_schema.schema.pattern"),
        ]
        for schema, param in cases:
            with self.assertRaises(openai.BadRequestError) as e:
                c.chat.completions.create(
                    model="random", messages=[{"role": "user", "content": "x"}],
                    response_format={"type": "json_schema",
                                     "json_schema": {"name": "s", "schema": schema}})
            self.assertEqual(e.exception.body["param"], param, e.exception.body)
        with self.assertRaises(openai.BadRequestError) as e:
            c.chat.completions.create(model="random", messages=[{"role": "user", "content": "x"}],
                                      response_format={"type": "yaml"})
        self.assertEqual(e.exception.body["param"], "response_format.type")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    args, rest = ap.parse_known_args()
    CLI = args.cli
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
