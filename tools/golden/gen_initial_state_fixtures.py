#!/usr/bin/python3
"""Generate the trained-initial-state fixtures (tests/golden/rwkv7/initial_state/<config>/) with
the official `rwkv` package: a sequence that starts from a state-tuning file instead of zeros.

Environment: as tools/golden/gen_rwkv7_golden.py (Debian's /usr/bin/python3 with python3-torch
1.13, the `rwkv` package from PyPI without dependencies; torch.load wrapped to drop `mmap`).

Usage:
  /usr/bin/python3 tools/golden/gen_initial_state_fixtures.py   # micro, tiny_f32, demo_seed3

The state file is what RWKV-PEFT's state tuning saves (train_type=state: the parameters with
"state" in their name, prefix "model." removed): a torch.save'd dict of
`blocks.{i}.att.time_state`, shape [n_head, head_size, head_size], here with seeded random values
(std 0.8, like trained states' ~1; not symmetric, so a transposed reading is caught). micro's is
stored in bf16 (RWKV-PEFT trains in bf16), tiny_f32's in f32.

Reference procedure, per config: the model's weights as in gen_rwkv7_golden.py; the official
package's state list built as the RWKV-PEFT / RWKV-Runner loaders for x070 build it, per layer
[att_x_prev = 0, time_state (as stored: [head][value][key], the package's own layout, no
transpose), ffn_x_prev = 0]; `out, state = model.forward(prompt, state)`, then one token at a time.
Logits after the prompt and each decode token, and the final state, are written as in
gen_rwkv7_golden.py. Self-checks recorded in the manifest: the same run token by token agrees
(< 1e-5); and the logits after the prompt differ from those of a zero start and of the transposed
state by more than 1% of their standard deviation (so the C++ test can tell them apart).
"""
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import gen_rwkv7_golden as g  # noqa: E402
import random_weights as rw  # noqa: E402

CONFIGS = {  # name: (state file dtype, seed of the state's values)
    "micro": ("bf16", 11),
    "tiny_f32": ("f32", 12),
}


def run(torch, RWKV, name, tmpdir, out_root):
    L, C, V, seed, dtype = g.CONFIGS[name][:5]
    H, N = C // 64, 64
    state_dtype, state_seed = CONFIGS[name]
    sd = rw.make_weights(L, C, V, seed)
    if dtype != "f32":
        sd = {k: rw.to_bf16_rounded(v) for k, v in sd.items()}
    rng = np.random.default_rng(state_seed)
    ts = [rng.normal(0.0, 0.8, size=(H, N, N)).astype(np.float32) for _ in range(L)]
    if state_dtype == "bf16":
        ts = [rw.to_bf16_rounded(t) for t in ts]
    odir = os.path.join(out_root, name)
    os.makedirs(odir, exist_ok=True)
    tdtype = torch.bfloat16 if state_dtype == "bf16" else torch.float32
    torch.save({f"blocks.{i}.att.time_state": torch.from_numpy(ts[i]).to(tdtype).contiguous()
                for i in range(L)}, os.path.join(odir, "time_state.pth"))

    base = os.path.join(tmpdir, name)
    g.save_pth(torch, sd, base + ".pth", torch.float32)
    model = RWKV(model=base, strategy="cpu fp32")
    os.remove(base + ".pth")

    def start(wkv):
        s = []
        for i in range(L):
            s += [torch.zeros(C), torch.from_numpy(np.ascontiguousarray(wkv[i])).float(),
                  torch.zeros(C)]
        return s

    prompt, decode = g.tokens_for(seed, V)
    logits = []
    out, state = model.forward(prompt, start(ts))
    logits.append(g.logits_np(out))
    for tok in decode:
        out, state = model.forward([tok], state)
        logits.append(g.logits_np(out))
    state_np = [s.detach().float().numpy().astype(np.float32) for s in state]

    st = start(ts)
    one = []
    for i, tok in enumerate(prompt + decode):
        o, st = model.forward([tok], st)
        if i + 1 >= len(prompt):
            one.append(g.logits_np(o))
    token_by_token = max(g.rel_diff(a, b) for a, b in zip(one, logits))
    assert token_by_token < 1e-5, token_by_token

    std = float(np.std(logits[0].astype(np.float64)))
    zero_out, _ = model.forward(prompt, None)
    transposed_out, _ = model.forward(prompt, start([t.transpose(0, 2, 1) for t in ts]))
    vs_zero = float(np.max(np.abs(g.logits_np(zero_out) - logits[0]))) / std
    vs_transposed = float(np.max(np.abs(g.logits_np(transposed_out) - logits[0]))) / std
    print(f"[{name}] token by token {token_by_token:.3g}; after the prompt, max |diff| / std "
          f"against a zero start {vs_zero:.3g}, against the transposed state {vs_transposed:.3g}")
    assert vs_zero > 0.01 and vs_transposed > 0.01

    entries = []
    for i, lg in enumerate(logits):
        n = len(prompt) + i
        fn = f"logits_{n}.bin"
        lg.astype("<f4").tofile(os.path.join(odir, fn))
        entries.append({"tokens_consumed": n, "file": fn,
                        "std": float(np.std(lg.astype(np.float64))), "argmax": int(np.argmax(lg))})
    parts = []
    for i in range(L):
        parts += [state_np[3 * i].reshape(C), state_np[3 * i + 1].reshape(H * N * N),
                  state_np[3 * i + 2].reshape(C)]
    np.concatenate(parts).astype("<f4").tofile(os.path.join(odir, "state.bin"))
    import importlib.metadata as md
    manifest = {
        "config": {"n_layer": L, "n_embd": C, "vocab_size": V, "seed": seed, "dtype": dtype},
        "initial_state": {"file": "time_state.pth", "dtype": state_dtype, "seed": state_seed,
                          "std": 0.8},
        "prompt": prompt, "decode": decode, "logits": entries, "logits_std": std,
        "state": {"file": "state.bin", "layout": "full",
                  "order": "per layer: att_shift [C], wkv [H][N_v][N_k], ffn_shift [C]",
                  "n_head": H, "head_size": N, "tokens_consumed": len(prompt) + len(decode)},
        "reference": {
            "package": "rwkv " + md.version("rwkv"), "class": "RWKV_x070", "strategy": "cpu fp32",
            "torch": torch.__version__,
            "start": "per layer [zeros(C), time_state as stored, zeros(C)]",
            "token_by_token_max_rel_diff": token_by_token,
            "after_prompt_vs_zero_start_max_diff_over_std": vs_zero,
            "after_prompt_vs_transposed_state_max_diff_over_std": vs_transposed,
        },
    }
    with open(os.path.join(odir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


# The end-to-end tests' demo model (`modrwkv make-demo-model`, tests/e2e/e2e_util.h DemoModel():
# shape tiny, vocabulary 65,536, bf16, seed 3) with a state file: the greedy tokens the official
# package generates from it, which the real server must stream (tests/e2e/initial_state_e2e_test).
DEMO = {"n_layer": 2, "n_embd": 128, "vocab": 65536, "seed": 3, "state_seed": 13, "tokens": 24,
        "prompt": [24281, 59, 4571, 261, 5585, 41693, 59]}  # "User: hi\n\nAssistant:"


def run_demo(torch, RWKV, tmpdir, out_root):
    L, C, V, seed = DEMO["n_layer"], DEMO["n_embd"], DEMO["vocab"], DEMO["seed"]
    H, N = C // 64, 64
    sd = {k: rw.to_bf16_rounded(v) for k, v in rw.make_weights(L, C, V, seed).items()}
    rng = np.random.default_rng(DEMO["state_seed"])
    ts = [rw.to_bf16_rounded(rng.normal(0.0, 0.8, size=(H, N, N)).astype(np.float32))
          for _ in range(L)]
    odir = os.path.join(out_root, "demo_seed3")
    os.makedirs(odir, exist_ok=True)
    torch.save({f"blocks.{i}.att.time_state": torch.from_numpy(ts[i]).to(torch.bfloat16)
                for i in range(L)}, os.path.join(odir, "time_state.pth"))
    base = os.path.join(tmpdir, "demo")
    g.save_pth(torch, sd, base + ".pth", torch.float32)
    model = RWKV(model=base, strategy="cpu fp32")
    os.remove(base + ".pth")

    def greedy(state):
        out, state = model.forward(DEMO["prompt"], state)
        ids, logprobs, margins = [], [], []
        for _ in range(DEMO["tokens"]):
            lg = g.logits_np(out).astype(np.float64)
            order = np.argsort(-lg)
            tok = int(order[0])
            ids.append(tok)
            logprobs.append(float(lg[tok] - (np.log(np.sum(np.exp(lg - lg.max()))) + lg.max())))
            margins.append(float(lg[order[0]] - lg[order[1]]))
            out, state = model.forward([tok], state)
        return ids, logprobs, margins

    start = []
    for i in range(L):
        start += [torch.zeros(C), torch.from_numpy(ts[i]).float(), torch.zeros(C)]
    ids, logprobs, margins = greedy(start)
    zero_ids, _, _ = greedy(None)
    print(f"[demo_seed3] from the state {ids[:8]}..., from zeros {zero_ids[:8]}...; smallest "
          f"top-2 logit margin {min(margins):.3g}")
    assert ids != zero_ids
    assert min(margins) > 1e-3, "a near tie: pick another state seed"
    import importlib.metadata as md
    manifest = {
        "model": {"make-demo-model": "--shape tiny --dtype bf16 --seed 3", "n_layer": L,
                  "n_embd": C, "vocab_size": V},
        "initial_state": {"file": "time_state.pth", "dtype": "bf16", "seed": DEMO["state_seed"],
                          "std": 0.8},
        "prompt": DEMO["prompt"], "greedy_ids": ids, "greedy_logprobs": logprobs,
        "min_top2_logit_margin": min(margins), "zero_state_greedy_ids": zero_ids,
        "reference": {"package": "rwkv " + md.version("rwkv"), "class": "RWKV_x070",
                      "strategy": "cpu fp32", "torch": torch.__version__,
                      "start": "per layer [zeros(C), time_state as stored, zeros(C)]"},
    }
    with open(os.path.join(odir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def main():
    torch, RWKV = g.setup_rwkv()
    out_root = os.path.join(REPO, "tests", "golden", "rwkv7", "initial_state")
    with tempfile.TemporaryDirectory() as tmp:
        for name in CONFIGS:
            run(torch, RWKV, name, tmp, out_root)
        run_demo(torch, RWKV, tmp, out_root)


if __name__ == "__main__":
    main()
