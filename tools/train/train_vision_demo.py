"""Trains the vision demo model (tiny SigLIP + generation-A adapter + tiny RWKV7) on synthetic shapes
and writes the shipped model folder plus the held-out fixtures the C++ tests use.

  /work/venv-tf/bin/python tools/train/train_vision_demo.py --out assets/vision-demo \
      --golden tests/golden/vision_demo

Reproducible: fixed seeds, one CPU thread. Prints the held-out accuracy (fp32 and bf16 weights).
"""

import argparse
import json
import math
import os
import random
import shutil
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes_data as data  # noqa: E402
import vision_demo_model as vm  # noqa: E402
from rwkv.rwkv_tokenizer import TRIE_TOKENIZER  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VOCAB = os.path.join(REPO, "assets", "rwkv_vocab_v20230424.txt")
TRAIN_SEED = 1
HELDOUT_SEED = 900001  # its own random stream, disjoint from TRAIN_SEED's
EXAMPLES_SEED = 700001
STOP = 24
C, N_LAYER, ADAPTER_HIDDEN = 64, 3, 128
IMAGE_SIZE = 64
PATCH_SIZE = 16


def prompt_text(question):
    return f"\x16User: {question}\x17\x16Assistant:"


class Tok:
    def __init__(self):
        self.t = TRIE_TOKENIZER(VOCAB)
        got = self.t.encode("\x16User: What is unusual about this image?\x17\x16Assistant:")
        want = [23, 24281, 59, 30031, 4600, 53238, 37598, 32234, 38744, 64, 24, 23, 5585, 41693, 59]
        if got != want:
            raise RuntimeError(f"tokenizer mismatch: {got} != {want}")

    def prompt(self, q):
        return self.t.encode(prompt_text(q))

    def answer(self, a):
        return self.t.encode(" " + a) + [STOP]

    def decode(self, ids):
        return self.t.decode(ids)


def pixel_lut(proc):
    """Per-value output of the processor (rescale + normalise are per pixel after the uint8
    resize): lets training keep uint8 images and still feed the processor's exact floats."""
    ramp = np.arange(256, dtype=np.uint8).repeat(16).reshape(64, 64)
    img = Image.fromarray(np.stack([ramp] * 3, -1), "RGB")
    out = proc(img, return_tensors="np")["pixel_values"][0][0]
    return torch.from_numpy(out.reshape(-1)[::16].copy())


def preprocess_to_uint8(proc, images, lut):
    """SiglipImageProcessor on PIL images -> the resized uint8 [N,3,S,S] it went through."""
    out = []
    for i in range(0, len(images), 256):
        pv = proc(images[i:i + 256], return_tensors="np")["pixel_values"]
        u = np.rint((pv + 1.0) * 127.5).astype(np.uint8)
        if not np.array_equal(lut.numpy()[u], pv):
            raise RuntimeError("pixel LUT does not reproduce the processor output")
        out.append(torch.from_numpy(u))
    return torch.cat(out)


def build_batch(tok, model, qs, answers):
    """Token inputs and targets after the image rows: prompt + answer[:-1]; targets on answers."""
    seqs, tgts = [], []
    for q, a in zip(qs, answers):
        p, t = tok.prompt(q), tok.answer(a)
        seqs.append(p + t[:-1])
        tgts.append([-100] * (len(p) - 1) + t)
    tmax = max(len(s) for s in seqs)
    inp = torch.full((len(seqs), tmax), STOP, dtype=torch.long)
    tgt = torch.full((len(seqs), tmax), -100, dtype=torch.long)
    for i, (s, t) in enumerate(zip(seqs, tgts)):
        inp[i, : len(s)] = torch.tensor(s)
        tgt[i, : len(t)] = torch.tensor(t)
    rows = model.rwkv.row_of[tgt.clamp(min=0)]
    return inp, torch.where(tgt >= 0, rows, torch.full_like(rows, -100))


class AuxHeads(torch.nn.Module):
    """Training-only linear probes on the mean-pooled adapter rows (colour, shape, position);
    their loss teaches the encoder + adapter to separate the classes before (and while) the
    language model learns to read them. Not exported."""

    def __init__(self, c):
        super().__init__()
        self.color = torch.nn.Linear(c, len(data.COLOR_NAMES))
        self.shape = torch.nn.Linear(c, len(data.SHAPES))
        self.pos = torch.nn.Linear(c, 9)

    def forward(self, img, specs):
        pooled = img.mean(dim=1)
        loss, accs = 0.0, {}
        for name, head, lab in (
                ("color", self.color, [data.COLOR_NAMES.index(s["color"]) for s in specs]),
                ("shape", self.shape, [data.SHAPES.index(s["shape"]) for s in specs]),
                ("pos", self.pos, [s["pos"] for s in specs])):
            lg = head(pooled)
            y = torch.tensor(lab)
            loss = loss + torch.nn.functional.cross_entropy(lg, y)
            accs[name] = (lg.argmax(-1) == y).float().mean().item()
        return loss / 3, accs


def loss_fn(model, pix, inp, tgt_rows, img=None):
    if img is None:
        img = model.image_rows(pix)
    x = torch.cat([img, model.rwkv.embed(inp)], dim=1)
    hidden, _ = model.rwkv(x)
    hidden = hidden[:, img.shape[1]:]
    mask = tgt_rows >= 0
    logits = model.rwkv.logits(hidden[mask])  # [M, K]
    # Exact full-vocabulary cross-entropy: the 65536-K untrained rows are zero, so logit 0 each.
    others = math.log(vm.VOCAB_SIZE - logits.shape[1])
    lse = torch.logsumexp(torch.cat([logits, torch.full_like(logits[:, :1], others)], 1), 1)
    return (lse - logits.gather(1, tgt_rows[mask].unsqueeze(1)).squeeze(1)).mean()


@torch.no_grad()
def greedy(model, tok, pix, questions, max_new=10):
    """Greedy answers with a full-vocab model (token 0 banned, stop at 24). Also returns the
    final-position logits after image + prompt."""
    answers = [None] * len(questions)
    first_logits = [None] * len(questions)
    by_q = {}
    for i, q in enumerate(questions):
        by_q.setdefault(q, []).append(i)
    for q, idx in by_q.items():
        p = torch.tensor(tok.prompt(q)).unsqueeze(0).repeat(len(idx), 1)
        img = model.image_rows(pix[idx])
        hidden, state = model.rwkv(torch.cat([img, model.rwkv.embed(p)], 1))
        logits = model.rwkv.logits(hidden[:, -1])
        outs = [[] for _ in idx]
        done = [False] * len(idx)
        for j in range(len(idx)):
            first_logits[idx[j]] = logits[j].clone()
        for _ in range(max_new):
            logits[:, 0] = -float("inf")
            nxt = logits.argmax(-1)
            for j, t in enumerate(nxt.tolist()):
                if not done[j]:
                    if t == STOP:
                        done[j] = True
                    else:
                        outs[j].append(t)
            if all(done):
                break
            hidden, state = model.rwkv(model.rwkv.embed(nxt.unsqueeze(1)), state)
            logits = model.rwkv.logits(hidden[:, -1])
        for j, i in enumerate(idx):
            answers[i] = tok.decode(outs[j]).strip() if done[j] else None
    return answers, first_logits


def full_model(trained, sd):
    m = vm.VisionDemoModel(trained.encoder.config, C, N_LAYER, ADAPTER_HIDDEN)
    m.encoder.load_state_dict(trained.encoder.state_dict())
    m.load_export(sd)
    return m.eval()


def accuracy(model, tok, pix, questions, expected):
    got, _ = greedy(model, tok, pix, questions)
    ok = [g == e for g, e in zip(got, expected)]
    return sum(ok) / len(ok), got


def qa_triples(specs):
    qs, ans, which = [], [], []
    for i, s in enumerate(specs):
        for q in data.QUESTIONS:
            qs.append(q)
            ans.append(data.answer(s, q))
            which.append(i)
    return qs, ans, which


def write_heldout(golden, count):
    """Writes the held-out images (PNG/JPEG, varied sizes) and answers.tsv; returns specs+names."""
    hd = os.path.join(golden, "heldout")
    shutil.rmtree(hd, ignore_errors=True)
    os.makedirs(hd)
    rows = []
    names = []
    for i, (spec, img) in enumerate(data.generate(HELDOUT_SEED, count)):
        name = f"img_{i:03d}." + ("png" if i % 3 == 0 else "jpg")
        path = os.path.join(hd, name)
        if name.endswith("png"):
            img.save(path, optimize=True)
        else:
            img.save(path, quality=90)
        names.append((name, spec))
        for q in data.QUESTIONS:
            rows.append(f"{name}\t{q}\t{data.answer(spec, q)}")
    with open(os.path.join(hd, "answers.tsv"), "w") as f:
        f.write("file\tquestion\tanswer\n" + "\n".join(rows) + "\n")
    return names


def load_images(proc, lut, paths):
    imgs = [Image.open(p).convert("RGB") for p in paths]
    return lut[preprocess_to_uint8(proc, imgs, lut).long()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "assets", "vision-demo"))
    ap.add_argument("--golden", default=os.path.join(REPO, "tests", "golden", "vision_demo"))
    ap.add_argument("--train-images", type=int, default=40000)
    ap.add_argument("--steps", type=int, default=8500)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--heldout", type=int, default=100)
    ap.add_argument("--aux-weight", type=float, default=1.0,
                    help="weight of the training-only colour/shape/position probe loss")
    ap.add_argument("--aux-only-steps", type=int, default=6000,
                    help="first steps train only encoder + adapter with the probe loss")
    ap.add_argument("--vis-lr-mult", type=float, default=1.0,
                    help="learning-rate multiplier of the encoder/adapter/probe groups")
    ap.add_argument("--questions", default="0,1,2", help="indices into QUESTIONS to train on")
    ap.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    ap.add_argument("--patch-size", type=int, default=PATCH_SIZE)
    ap.add_argument("--val-images", type=int, default=200)
    ap.add_argument("--save-ckpt", default="", help="save the training state here at each eval")
    ap.add_argument("--from-ckpt", default="", help="start from a --save-ckpt file")
    ap.add_argument("--no-outputs", action="store_true", help="train and evaluate only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    t0 = time.time()

    tok = Tok()
    proc = vm.image_processor(args.image_size)
    lut = pixel_lut(proc)
    token_ids = {STOP}
    for q in data.QUESTIONS:
        token_ids.update(tok.prompt(q))
    for s in ({"shape": sh, "color": co, "pos": p} for sh in data.SHAPES
              for co in data.COLOR_NAMES for p in range(9)):
        for q in data.QUESTIONS:
            token_ids.update(tok.answer(data.answer(s, q)))
    token_ids = sorted(token_ids)
    print(f"trained vocabulary rows: {len(token_ids)}")

    train_specs, chunks, pending = [], [], []
    for spec, im in data.iter_generate(TRAIN_SEED, args.train_images):
        train_specs.append(spec)
        pending.append(im)
        if len(pending) == 1024:
            chunks.append(preprocess_to_uint8(proc, pending, lut))
            pending = []
    if pending:
        chunks.append(preprocess_to_uint8(proc, pending, lut))
    train_u8 = torch.cat(chunks)
    del chunks, pending
    val = data.generate(HELDOUT_SEED + 1, args.val_images)
    val_pix = load_images_from_pil(proc, lut, [im for _, im in val])
    vq, va, vw = qa_triples([s for s, _ in val])
    print(f"data ready in {time.time() - t0:.0f}s")

    model = vm.VisionDemoModel(vm.encoder_config(args.image_size, args.patch_size), C, N_LAYER, ADAPTER_HIDDEN, token_ids)
    aux = AuxHeads(C)
    if args.from_ckpt:
        ck = torch.load(args.from_ckpt)
        model.load_state_dict(ck["model"])
        aux.load_state_dict(ck["aux"])
    groups = {}
    named = [("m." + n, p) for n, p in model.named_parameters()]
    named += [("aux." + n, p) for n, p in aux.named_parameters()]
    for n, p in named:
        vis = not n.startswith("m.rwkv.")
        wd = p.dim() >= 2 and "emb" not in n
        groups.setdefault((vis, wd), []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "weight_decay": 0.01 if wd else 0.0,
                              "lr_mult": args.vis_lr_mult if vis else 1.0}
                             for (vis, wd), ps in groups.items()], lr=args.lr,
                            betas=(0.9, 0.99), eps=1e-8)
    train_q = [data.QUESTIONS[int(i)] for i in args.questions.split(",")]
    rng = random.Random(TRAIN_SEED + 7)
    losses, aux_losses, aux_acc = [], [], []
    history = []
    lm_steps = max(1, args.steps - args.aux_only_steps)
    for step in range(1, args.steps + 1):
        aux_only = step <= args.aux_only_steps
        if aux_only:
            lr = args.lr * min(1.0, step / 50)
        else:
            s_lm = step - args.aux_only_steps
            warm = min(1.0, s_lm / 100)
            lr = args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s_lm / lm_steps)))
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_mult"]
        idx = [rng.randrange(len(train_specs)) for _ in range(args.batch)]
        qs = [rng.choice(train_q) for _ in idx]
        ans = [data.answer(train_specs[i], q) for i, q in zip(idx, qs)]
        pix = lut[train_u8[idx].long()]
        model.train()
        img = model.image_rows(pix)
        la, accs = aux(img, [train_specs[i] for i in idx])
        if aux_only:
            loss = la
        else:
            inp, tgt = build_batch(tok, model, qs, ans)
            lm = loss_fn(model, pix, inp, tgt, img=img)
            loss = lm + args.aux_weight * la
            losses.append(lm.item())
        aux_losses.append(la.item())
        aux_acc.append([accs["color"], accs["shape"], accs["pos"]])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            a = np.mean(aux_acc[-50:], axis=0)
            lm_txt = f"loss {np.mean(losses[-50:]):.4f} " if losses else ""
            print(f"step {step} {lm_txt}aux {np.mean(aux_losses[-50:]):.3f} "
                  f"acc c/s/p {a[0]:.2f}/{a[1]:.2f}/{a[2]:.2f} lr {lr:.2e} "
                  f"{time.time() - t0:.0f}s", flush=True)
        if step % 250 == 0 or step == args.aux_only_steps:
            model.eval()
            with torch.no_grad():
                vimg = torch.cat([model.image_rows(val_pix[i:i + 100])
                                  for i in range(0, len(val_pix), 100)])
                _, vaccs = aux(vimg, [s for s, _ in val])
            print(f"step {step} validation probe accuracy c/s/p {vaccs['color']:.3f}/"
                  f"{vaccs['shape']:.3f}/{vaccs['pos']:.3f}", flush=True)
            if step == args.aux_only_steps and args.save_ckpt:
                torch.save({"model": model.state_dict(), "aux": aux.state_dict(),
                            "step": step, "history": history}, args.save_ckpt + ".aux")
        if (not aux_only and (step % args.eval_every == 0 or step == args.steps)):
            model.eval()
            fm = full_model(model, model.export_state_dict(torch.float32))
            acc, got = accuracy(fm, tok, val_pix[vw], vq, va)
            per_q = {q[:10]: round(sum(g == e for g, e, qq in zip(got, va, vq) if qq == q)
                                   / vq.count(q), 3) for q in data.QUESTIONS}
            history.append({"step": step, "loss": float(np.mean(losses[-50:])), "val_acc": acc})
            print(f"step {step} validation accuracy {acc:.4f} {per_q}", flush=True)
            if args.save_ckpt:
                torch.save({"model": model.state_dict(), "aux": aux.state_dict(),
                            "step": step, "history": history}, args.save_ckpt)
    if args.no_outputs:
        return
    train_time = time.time() - t0

    # ---- outputs ----
    model.eval()
    os.makedirs(args.out, exist_ok=True)
    sd_bf16 = model.export_state_dict(torch.bfloat16)
    torch.save(sd_bf16, os.path.join(args.out, "rwkv-0.pth"))
    enc_dir = os.path.join(args.out, "encoder")
    model.encoder.save_pretrained(enc_dir, safe_serialization=True)
    proc.save_pretrained(enc_dir)
    manifest = {
        "format": 1,
        "checkpoint": "rwkv-0.pth",
        "chat_template": "{image}\u0016User: {text}\u0017\u0016Assistant:",
        "stop_tokens": [STOP],
        "ban_tokens": [0],
        "vision": {"encoder": "encoder", "splice": "prepend"},
    }
    with open(os.path.join(args.out, "modrwkv-model.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")

    # Held-out fixtures, evaluated from the files on disk with the stored weights.
    names = write_heldout(args.golden, args.heldout)
    hd = os.path.join(args.golden, "heldout")
    pix = load_images(proc, lut, [os.path.join(hd, n) for n, _ in names])
    hq, ha, hw = qa_triples([s for _, s in names])
    fm32 = full_model(model, model.export_state_dict(torch.float32))
    acc32, _ = accuracy(fm32, tok, pix[hw], hq, ha)
    stored = torch.load(os.path.join(args.out, "rwkv-0.pth"))
    fmbf = full_model(model, stored)
    accbf, got = accuracy(fmbf, tok, pix[hw], hq, ha)
    per_q = {q: sum(g == e for g, e, qq in zip(got, ha, hq) if qq == q) / hq.count(q)
             for q in data.QUESTIONS}
    wrong = [{"file": names[w][0], "question": q, "expected": e, "got": g}
             for g, e, q, w in zip(got, ha, hq, hw) if g != e]
    result = {
        "questions": len(hq), "images": len(names),
        "accuracy_bf16_weights": accbf, "accuracy_fp32_weights": acc32,
        "accuracy_by_question_bf16": per_q, "wrong_bf16": wrong,
        "decoding": "greedy, token 0 banned, stop at 24, image rows prepended before ln0",
        "train_steps": args.steps, "train_seconds": round(train_time), "history": history,
    }
    with open(os.path.join(args.golden, "torch_accuracy.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    # Final-position logits after image + prompt for three held-out images (bf16 weights).
    picks = [(0, data.Q_SHAPE), (1, data.Q_COLOR), (2, data.Q_WHERE)]
    _, first = greedy(fmbf, tok, pix[[i for i, _ in picks]], [q for _, q in picks])
    cases = []
    for (i, q), lg in zip(picks, first):
        vals, ids = lg.topk(10)
        cases.append({"file": names[i][0], "question": q,
                      "prompt_tokens": tok.prompt(q), "image_rows": int(pix.shape[-1] // model.encoder.config.patch_size) ** 2,
                      "top10_ids": ids.tolist(), "top10_values": [float(v) for v in vals]})
    with open(os.path.join(args.golden, "logits_top10.json"), "w") as f:
        json.dump({"weights": "rwkv-0.pth as stored (bf16), computed in float32",
                   "cases": cases}, f, indent=2)
        f.write("\n")

    write_examples(args.out, proc, lut, tok, fmbf)
    print(f"held-out accuracy: fp32 {acc32:.4f}  bf16 {accbf:.4f}  by question {per_q}")
    print(f"final train loss {np.mean(losses[-50:]):.4f}; total time {time.time() - t0:.0f}s")


def load_images_from_pil(proc, lut, imgs):
    return lut[preprocess_to_uint8(proc, imgs, lut).long()]


def write_examples(out, proc, lut, tok, model):
    ex = os.path.join(out, "examples")
    shutil.rmtree(ex, ignore_errors=True)
    os.makedirs(ex)
    rng = random.Random(EXAMPLES_SEED)
    lines = ["# Example images for the vision demo", "",
             "Expected greedy answers of the demo model (prompt: `\\x16User: {question}\\x17"
             "\\x16Assistant:`, image rows prepended).", "",
             "| file | question | answer |", "|---|---|---|"]
    picks = [("circle", "red", 0, "white"), ("triangle", "blue", 4, "dark grey"),
             ("square", "yellow", 8, "black"), ("cross", "green", 6, "light grey")]
    for n, (shape, color, pos, bg) in enumerate(picks):
        spec = data.sample_spec(rng)
        spec.update(shape=shape, color=color, pos=pos, bg=bg, w=160, h=128)
        img = data.render(spec)
        name = f"{color}_{shape}." + ("png" if n % 2 == 0 else "jpg")
        img.save(os.path.join(ex, name), **({"optimize": True} if n % 2 == 0 else {"quality": 90}))
        pix = load_images(proc, lut, [os.path.join(ex, name)])
        for q in data.QUESTIONS:
            got, _ = greedy(model, tok, pix, [q])
            want = data.answer(spec, q)
            mark = "" if got[0] == want else f" (model says: {got[0]})"
            lines.append(f"| {name} | {q} | {want}{mark} |")
    with open(os.path.join(ex, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
