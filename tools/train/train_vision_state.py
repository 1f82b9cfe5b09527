"""State tuning of the shipped vision demo model (RWKV-PEFT style): every weight frozen, only one
initial WKV state per layer `blocks.{i}.att.time_state` [H,64,64] ([head][value][key]) is trained.

Behaviour taught ("detailed"): "What shape is in the picture?" -> the shape answer and the position
answer (" A red triangle. In the top left corner."); the colour and position questions keep their
normal answers. A request starts from the state (token shifts zero, WKV state = time_state), then
the image rows, then the prompt tokens, exactly as the server does.

  /work/venv-tf/bin/python tools/train/train_vision_state.py

Writes assets/vision-demo/states/detailed.pth ({"blocks.{i}.att.time_state": float32 [H,64,64]})
and detailed.json (held-out accuracies with and without the state, the example answers).
"""

import argparse
import csv
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import SiglipVisionModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes_data as data  # noqa: E402
import train_vision_demo as tv  # noqa: E402
import vision_demo_model as vm  # noqa: E402

REPO = tv.REPO
MODEL_DIR = os.path.join(REPO, "assets", "vision-demo")
HELDOUT_DIR = os.path.join(REPO, "tests", "golden", "vision_demo", "heldout")  # seed 900001
TRAIN_SEED = 314159  # distinct from 1 (model training), 900001/900002 (held-out/val), 700001


def detailed(spec):
    return data.answer(spec, data.Q_SHAPE) + " " + data.answer(spec, data.Q_WHERE)


def target(spec, q):
    """The tuned behaviour: the detailed answer for the shape question, the normal one otherwise."""
    return detailed(spec) if q == data.Q_SHAPE else data.answer(spec, q)


def load_model():
    """The model as shipped: bf16 rwkv-0.pth as float32 values, float32 encoder; all frozen."""
    m = vm.VisionDemoModel(vm.encoder_config(), tv.C, tv.N_LAYER, tv.ADAPTER_HIDDEN)
    m.encoder = SiglipVisionModel.from_pretrained(os.path.join(MODEL_DIR, "encoder"))
    m.load_export(torch.load(os.path.join(MODEL_DIR, "rwkv-0.pth")))
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def initial_state(model, time_state, b):
    """Per layer (att shift 0, wkv = time_state broadcast over the batch, ffn shift 0)."""
    st = model.rwkv.zero_state(b)
    if time_state is None:
        return st
    return [(a, ts.unsqueeze(0).expand(b, -1, -1, -1), f) for (a, _, f), ts in zip(st, time_state)]


def lm_loss(model, time_state, img, inp, tgt):
    """Full-vocabulary CE on the answer tokens; sequence = state, image rows, prompt, answer."""
    x = torch.cat([img, model.rwkv.embed(inp)], dim=1)
    hidden, _ = model.rwkv(x, initial_state(model, time_state, x.shape[0]))
    hidden = hidden[:, img.shape[1]:]
    mask = tgt >= 0
    return F.cross_entropy(model.rwkv.logits(hidden[mask]), tgt[mask])


@torch.no_grad()
def greedy(model, tok, time_state, img, q, max_new=24):
    """Greedy answers for image rows img [B,P,C] and one question (token 0 banned, stop at 24;
    None when no stop within max_new). Also returns the generated token ids."""
    b = img.shape[0]
    p = torch.tensor(tok.prompt(q)).unsqueeze(0).repeat(b, 1)
    hidden, state = model.rwkv(torch.cat([img, model.rwkv.embed(p)], 1),
                               initial_state(model, time_state, b))
    outs, done = [[] for _ in range(b)], [False] * b
    for _ in range(max_new):
        logits = model.rwkv.logits(hidden[:, -1])
        logits[:, 0] = -float("inf")
        nxt = logits.argmax(-1)
        for j, t in enumerate(nxt.tolist()):
            if not done[j]:
                outs[j].append(t)
                done[j] = t == tv.STOP
        if all(done):
            break
        hidden, state = model.rwkv(model.rwkv.embed(nxt.unsqueeze(1)), state)
    texts = [tok.decode(o[:-1]).strip() if d else None for o, d in zip(outs, done)]
    return texts, outs


def evaluate(model, tok, time_state, img, specs):
    """Per question: greedy answers and exact-match accuracy against the normal and tuned answers."""
    res = {}
    for q in data.QUESTIONS:
        got, _ = greedy(model, tok, time_state, img, q)
        res[q] = {
            "accuracy_normal_answer": sum(g == data.answer(s, q) for g, s in zip(got, specs)) / len(specs),
            "accuracy_tuned_answer": sum(g == target(s, q) for g, s in zip(got, specs)) / len(specs),
            "wrong_vs_tuned": [(i, g) for i, (g, s) in enumerate(zip(got, specs)) if g != target(s, q)],
        }
    return res


def heldout(proc, lut):
    """The held-out images as the tests read them (files of seed 900001) and their specs."""
    gen = data.generate(tv.HELDOUT_SEED, 100)
    with open(os.path.join(HELDOUT_DIR, "answers.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    names = sorted({r["file"] for r in rows})
    for r in rows:  # the files on disk are this generator's images
        assert data.answer(gen[names.index(r["file"])][0], r["question"]) == r["answer"]
    return tv.load_images(proc, lut, [os.path.join(HELDOUT_DIR, n) for n in names]), [s for s, _ in gen]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(MODEL_DIR, "states"))
    ap.add_argument("--name", default="detailed")
    ap.add_argument("--train-images", type=int, default=6000)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t0 = time.time()

    tok = tv.Tok()
    model = load_model()
    proc = vm.image_processor()
    lut = tv.pixel_lut(proc)

    # Everything before the state is frozen, so the image rows are computed once.
    gen = data.generate(TRAIN_SEED, args.train_images)
    specs = [s for s, _ in gen]
    with torch.no_grad():
        pix = tv.load_images_from_pil(proc, lut, [im for _, im in gen])
        rows = torch.cat([model.image_rows(pix[i:i + 256]) for i in range(0, len(pix), 256)])
        hpix, hspecs = heldout(proc, lut)
        hrows = model.image_rows(hpix)
    del gen, pix
    print(f"data ready in {time.time() - t0:.0f}s", flush=True)

    h = tv.C // vm.HEAD_SIZE
    time_state = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.zeros(h, vm.HEAD_SIZE, vm.HEAD_SIZE)) for _ in range(tv.N_LAYER)])
    opt = torch.optim.AdamW(time_state.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    # Half the batch asks for the shape (the new behaviour), a quarter each the colour and position.
    mix = [data.Q_SHAPE, data.Q_SHAPE, data.Q_COLOR, data.Q_WHERE]
    rng = random.Random(TRAIN_SEED + 7)
    losses = []
    t_train = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / 20) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = [rng.randrange(len(specs)) for _ in range(args.batch)]
        qs = [rng.choice(mix) for _ in idx]
        inp, tgt = tv.build_batch(tok, model, qs, [target(specs[i], q) for i, q in zip(idx, qs)])
        loss = lm_loss(model, time_state, rows[idx], inp, tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0:
            print(f"step {step} loss {np.mean(losses[-25:]):.4f} lr {lr:.1e} "
                  f"{time.time() - t0:.0f}s", flush=True)
        if step % args.eval_every == 0 and step < args.steps:
            ev = evaluate(model, tok, time_state, hrows[:50], hspecs[:50])
            print(f"step {step} held-out[:50] tuned-answer accuracy "
                  f"{ {q[:10]: r['accuracy_tuned_answer'] for q, r in ev.items()} }", flush=True)
    train_seconds = time.time() - t_train

    state = {f"blocks.{i}.att.time_state": p.detach().float().clone() for i, p in enumerate(time_state)}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, args.name + ".pth")
    torch.save(state, path)
    loaded = [torch.load(path)[f"blocks.{i}.att.time_state"] for i in range(tv.N_LAYER)]

    with_state = evaluate(model, tok, loaded, hrows, hspecs)
    without = evaluate(model, tok, None, hrows, hspecs)
    # The greedy decode from the saved state against the training-time forward: teacher-forcing
    # the greedy tokens through lm_loss's arrangement must give the same argmax at every position.
    for q in data.QUESTIONS:
        _, outs = greedy(model, tok, loaded, hrows[:8], q)
        for j, o in enumerate(outs):
            p = tok.prompt(q)
            inp = torch.tensor([p + o[:-1]])
            x = torch.cat([hrows[j:j + 1], model.rwkv.embed(inp)], 1)
            with torch.no_grad():
                hid, _ = model.rwkv(x, initial_state(model, loaded, 1))
                lg = model.rwkv.logits(hid[0, hrows.shape[1] + len(p) - 1:])
            lg[:, 0] = -float("inf")
            assert lg.argmax(-1).tolist() == o, (q, j)

    ex_dir = os.path.join(MODEL_DIR, "examples")
    ex_files = ["red_circle.png", "blue_triangle.jpg", "yellow_square.png", "green_cross.jpg"]
    with torch.no_grad():
        ex_rows = model.image_rows(tv.load_images(proc, lut, [os.path.join(ex_dir, f) for f in ex_files]))
    ex_with, _ = greedy(model, tok, loaded, ex_rows, data.Q_SHAPE)
    ex_without, _ = greedy(model, tok, None, ex_rows, data.Q_SHAPE)

    def summary(ev):
        return {q: {k: v for k, v in r.items() if k != "wrong_vs_tuned"} for q, r in ev.items()}

    result = {
        "state": os.path.relpath(path, REPO),
        "behaviour": f"{args.name}: '{data.Q_SHAPE}' -> shape answer + ' ' + position answer "
                     "(e.g. 'A red triangle. In the top left corner.'); the other questions unchanged",
        "layout": "blocks.{i}.att.time_state float32 [n_head, 64, 64] = initial WKV state "
                  "[head][value][key]; token shifts zero; then image rows, then prompt tokens",
        "heldout": {"images": len(hspecs), "source": "tests/golden/vision_demo/heldout (seed 900001)",
                    "with_state": summary(with_state), "without_state": summary(without),
                    "wrong_with_state": {q: [{"image": i, "got": g} for i, g in r["wrong_vs_tuned"]]
                                         for q, r in with_state.items()}},
        "train": {"steps": args.steps, "seconds": round(train_seconds), "lr": args.lr,
                  "batch": args.batch, "train_images": args.train_images, "train_seed": TRAIN_SEED,
                  "question_mix": "1/2 shape (detailed), 1/4 colour, 1/4 position",
                  "optimizer": "AdamW betas (0.9, 0.99), no weight decay, 20-step warm-up, cosine to 0.05 lr",
                  "final_loss": float(np.mean(losses[-25:]))},
        "decoding": "greedy, float32 compute with the bf16 weights, token 0 banned, stop at 24 or 24 tokens",
        "examples": [{"file": f, "question": data.Q_SHAPE, "with_state": a, "without_state": b}
                     for f, a, b in zip(ex_files, ex_with, ex_without)],
    }
    with open(os.path.join(args.out, args.name + ".json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    for name, ev in (("with state", with_state), ("without state", without)):
        print(f"held-out {name}: " + ", ".join(
            f"{q[:10]} tuned {r['accuracy_tuned_answer']:.3f} normal {r['accuracy_normal_answer']:.3f}"
            for q, r in ev.items()))
    for e in result["examples"]:
        print(f"{e['file']}: with {e['with_state']!r} without {e['without_state']!r}")
    print(f"training {train_seconds:.0f}s, total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
