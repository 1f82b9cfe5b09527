#!/usr/bin/env python3
"""Generates tests/golden/tokenizer/* from the official RWKV World tokenizer.

The reference is TRIE_TOKENIZER in rwkv/rwkv_tokenizer.py of the `rwkv` pip package (pure Python,
no torch needed). Get it without installing anything:

    pip download rwkv==0.8.32 --no-deps -d /tmp/rwkv && (cd /tmp/rwkv && unzip -o -q rwkv-*.whl)
    python3 tools/golden/gen_tokenizer_fixtures.py --rwkv /tmp/rwkv

Outputs (deterministic: fixed seed, no time or environment dependence):
  encode_cases.txt   <name> TAB <input bytes, base64> TAB <official ids, space separated>
                     Valid UTF-8 inputs go through TRIE_TOKENIZER.encode(str), the others through
                     encodeBytes(bytes).
  utf8_replace.txt   <name> TAB <input bytes, base64> TAB <bytes.decode("utf-8", "replace")
                     UTF-8 encoded, base64>: CPython's U+FFFD substitution (maximal subparts), which
                     the streaming detokenizer must reproduce.
"""

import argparse
import base64
import hashlib
import importlib.util
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SEED = 20230424

PROSE = [
    "The quick brown fox jumps over the lazy dog. It's 3:45 p.m., and the temperature is 21.5 °C.",
    "In 1905, Albert Einstein published four papers that changed physics -- on the photoelectric "
    "effect, Brownian motion, special relativity, and mass-energy equivalence (E = mc^2).",
    "\"Are you sure?\" she asked. 'Quite sure,' he replied; then, after a pause: \"Well... mostly.\"",
    "RWKV is an RNN with transformer-level LLM performance. It can be directly trained like a GPT "
    "(parallelizable). So it's combining the best of RNN and transformer - great performance, fast "
    "inference, saves VRAM, fast training, \"infinite\" ctx_len, and free sentence embedding.",
    "Dear Sir or Madam,\n\nI am writing to enquire about the position advertised on 12/03/2024.\n"
    "Please find attached my CV.\n\nYours faithfully,\nJ. Smith",
    "User: What is unusual about this image?\n\nAssistant: A man is ironing clothes on a board "
    "attached to the roof of a moving taxi.",
    "Q: How many r's are in \"strawberry\"?\nA: There are three: st-r-awbe-r-r-y.",
    "Ceci n'est pas une pipe. Über den Wolken muss die Freiheit wohl grenzenlos sein. "
    "¿Dónde está la biblioteca? Ça va très bien, merci ! Smörgåsbord, naïve café, façade.",
    "- item one\n- item two\n  - nested item\n1. first\n2. second\n\n| a | b |\n|---|---|\n| 1 | 2 |",
    "Visit https://www.example.com/path?query=1&lang=en#section or mail info@example.org today!",
    "$$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$$ and $\\alpha + \\beta = \\gamma$.",
]

CODE = [
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <stdio.h>\n\nint main(void) {\n\tprintf(\"Hello, world!\\n\");\n\treturn 0;\n}\n",
    "for (let i = 0; i < arr.length; i++) {\n  if (arr[i] === undefined) continue;\n"
    "  console.log(`${i}: ${arr[i]}`);\n}\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n"
    "    println!(\"{:?}\", v);\n}\n",
    '{"model": "rwkv7-g1", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7, '
    '"top_p": 0.9, "stop": ["\\n\\n"]}',
    "<!DOCTYPE html>\n<html>\n  <body>\n    <p class=\"x\">Hello &amp; bye</p>\n  </body>\n</html>\n",
    "#!/bin/sh\nset -eu\nfor f in *.txt; do\n  wc -l \"$f\" | awk '{print $1}' >> out.log\ndone\n",
    "SELECT u.id, COUNT(*) AS n FROM users u JOIN orders o ON o.user_id = u.id\n"
    "WHERE o.created_at >= '2024-01-01' GROUP BY u.id HAVING n > 3 ORDER BY n DESC;\n",
    "class Foo(object):\n\tdef __init__(self):\n\t\tself.x = [1, 2, 3]\t# tabs\n\n\n\n",
    "    \n        \n\t\t\n  x = {  }  ;;  \r\n\r\n  y = ( ( ( ) ) )\r\n",
]

CJK = [
    "你好，世界！今天天气很好，我们去公园散步吧。人工智能正在改变我们的生活方式。",
    "我是一个大型语言模型，由RWKV架构训练而成。请问有什么可以帮助您的吗？",
    "日本語のテキストです。ひらがな、カタカナ、そして漢字が混ざっています。東京は晴れ。",
    "한국어 문장입니다. 안녕하세요, 만나서 반갑습니다. 오늘은 날씨가 좋네요.",
    "《红楼梦》是中国古典四大名著之一。「引号」『双引号』【方括号】……——",
    "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３！？",
]

OTHER_SCRIPTS = [
    "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Γειά σου Κόσμε! Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "مرحبا بالعالم! هذه جملة باللغة العربية.",
    "שלום עולם! זה משפט בעברית.",
    "नमस्ते दुनिया! यह हिंदी में एक वाक्य है।",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353a\u0354\u0355l\u0356g\u0357o",
    "Tiếng Việt có dấu: Trăm năm trong cõi người ta.",
]

EMOJI = [
    "😀😃😄😁😆😅😂🤣", "👍🏻👍🏼👍🏽👍🏾👍🏿", "👨‍👩‍👧‍👦 👩‍💻 🏳️‍🌈 🏴‍☠️",
    "🇺🇸🇨🇳🇯🇵🇩🇪🇫🇷", "❤️ ❤ ☺️ ✔️ ©️ ®️ ™️", "I ❤️ RWKV 🚀🚀🚀 (y) :-) ^_^",
    "\U0001F9D1\u200D\U0001F91D\u200D\U0001F9D1", "🫠🫡🫢🫣🫤🥹",
]

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her would "
         "make like him into time has look two more write go see number no way could people my "
         "than first water been call who oil its now find long down day did get come made may part "
         "model token state kernel tensor gradient inference server request stream batch").split()


def load_official(rwkv_dir):
    path = os.path.join(rwkv_dir, "rwkv", "rwkv_tokenizer.py")
    spec = importlib.util.spec_from_file_location("rwkv_tokenizer", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.TRIE_TOKENIZER


def random_codepoint(rng, lo, hi):
    while True:
        cp = rng.randint(lo, hi)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def sentence(rng):
    n = rng.randint(3, 18)
    words = [rng.choice(WORDS) for _ in range(n)]
    if rng.random() < 0.3:
        words.insert(rng.randrange(n), str(rng.randint(0, 10 ** rng.randint(1, 9))))
    s = " ".join(words)
    s = s[0].upper() + s[1:] if rng.random() < 0.8 else s
    return s + rng.choice([".", "!", "?", ",", ";", ":", "...", "", "\n", "\n\n"])


def invalid_utf8_piece(rng):
    kind = rng.randrange(8)
    if kind == 0:  # lone continuation bytes
        return bytes(rng.randint(0x80, 0xBF) for _ in range(rng.randint(1, 4)))
    if kind == 1:  # truncated multi-byte character
        ch = random_codepoint(rng, 0x80, 0x10FFFF).encode("utf-8")
        return ch[: rng.randint(1, len(ch) - 1)]
    if kind == 2:  # overlong encodings
        return rng.choice([b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\x9f\xbf",
                           b"\xf0\x80\x80\xaf", b"\xf0\x8f\xbf\xbf"])
    if kind == 3:  # encoded surrogates
        return rng.choice([b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80"])
    if kind == 4:  # beyond U+10FFFF and never-valid bytes
        return rng.choice([b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80",
                           b"\xfe", b"\xff", b"\xc0", b"\xc1"])
    if kind == 5:  # lead byte followed by ASCII
        return bytes([rng.choice([0xC3, 0xE4, 0xF0])]) + rng.choice([b"A", b" ", b"\n"])
    if kind == 6:  # arbitrary bytes
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 12)))
    return bytes(rng.randint(0x80, 0xFF) for _ in range(rng.randint(1, 8)))


def build_corpus(rng, vocab_tokens):
    """Returns a list of (name, input) with input a str or bytes; str inputs are valid UTF-8."""
    cases = [
        ("empty", ""),
        ("arch/chat", "User: hi\n\nAssistant:"),
        ("arch/template", "\x16User: What is unusual about this image?\x17\x16Assistant:"),
    ]
    counts = {}

    def add(kind, x):
        counts[kind] = counts.get(kind, 0) + 1
        cases.append((f"{kind}/{counts[kind] - 1}", x))

    fixed = PROSE + CODE + CJK + OTHER_SCRIPTS + EMOJI
    for s in fixed:
        add("fixed", s)
    for _ in range(500):  # mixtures of the fixed texts, sliced at random character boundaries
        parts = [rng.choice(fixed) for _ in range(rng.randint(1, 4))]
        s = rng.choice(["", " ", "\n", "\n\n", "\t"]).join(parts)
        a = rng.randrange(len(s) + 1)
        add("mix", s[a:a + rng.randint(1, 400)])
    for _ in range(400):
        add("prose", "".join(sentence(rng) + " " for _ in range(rng.randint(1, 8))).rstrip(" "))
    for _ in range(300):
        s = rng.choice(CODE)
        indent = rng.choice(["\t", "  ", "    ", "        ", " "])
        add("code", s.replace("    ", indent).replace("\t", indent))
    for _ in range(300):
        n = rng.randint(1, 60)
        gen = rng.choice([
            lambda: random_codepoint(rng, 0x4E00, 0x9FFF),  # CJK ideographs
            lambda: random_codepoint(rng, 0x3040, 0x30FF),  # kana
            lambda: random_codepoint(rng, 0xAC00, 0xD7A3),  # hangul
            lambda: rng.choice(CJK[rng.randrange(len(CJK))]),
        ])
        add("cjk", "".join(gen() for _ in range(n)))
    for _ in range(250):
        n = rng.randint(1, 30)
        add("emoji", "".join(
            random_codepoint(rng, 0x1F300, 0x1FAFF) + rng.choice(["", "", "\uFE0F", "\u200D", " ",
                                                                   "\U0001F3FB"])
            for _ in range(n)))
    for _ in range(400):  # any code point, any plane
        n = rng.randint(1, 40)
        ranges = [(0x20, 0x7E), (0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, 0x10FFFF),
                  (0x20, 0x10FFFF)]
        add("unicode", "".join(random_codepoint(rng, *rng.choice(ranges)) for _ in range(n)))
    for _ in range(250):  # control characters mixed with text
        n = rng.randint(1, 60)
        add("control", "".join(rng.choice([chr(rng.randint(0, 0x1F)), "\x7f", rng.choice(WORDS),
                                           " ", "\x16User:", "\x17"]) for _ in range(n)))
    for _ in range(500):  # invalid UTF-8 (bytes inputs)
        pieces = []
        for _ in range(rng.randint(1, 10)):
            pieces.append(invalid_utf8_piece(rng) if rng.random() < 0.5 else
                          rng.choice([rng.choice(WORDS), rng.choice(CJK)[:3], "🚀", " ", "\n"])
                          .encode("utf-8"))
        add("invalid", b"".join(pieces))
    for _ in range(100):
        add("randbytes", rng.randbytes(rng.randint(1, 200)))
    for unit in [" ", "\n", "\t", "\r\n", "a", "0", "=", "-", "#", "*", ".", "ab", "中", "😀", "\x00",
                 "  \n", "\u3000", "_", "/", "\\"]:  # long runs
        for n in [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 257,
                  1000]:
            add("run", unit * n)
    for unit in [" ", "\n", "a"]:
        add("run", unit * 5000)
    for _ in range(250):  # whitespace runs
        add("space", "".join(rng.choice([" ", " ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000",
                                         "x"]) for _ in range(rng.randint(1, 200))))
    for _ in range(250):  # numbers, dates, identifiers
        add("numeric", " ".join(rng.choice([
            str(rng.randint(0, 10 ** 12)), f"{rng.random() * 1000:.{rng.randint(0, 6)}f}",
            f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            hex(rng.getrandbits(64)), f"v{rng.randint(0, 9)}.{rng.randint(0, 99)}",
            "snake_case_name", "CamelCaseName", "-1e-10", "3.14159"])
            for _ in range(rng.randint(1, 12))))
    for _ in range(1000):  # concatenations of random vocab tokens (bytes inputs when not UTF-8)
        k = rng.randint(1, 40)
        add("tokens", b"".join(rng.choice(vocab_tokens) for _ in range(k)))
    long_tokens = [t for t in vocab_tokens if len(t) >= 6]
    for _ in range(600):  # near misses of long tokens: prefixes, extensions, one byte changed
        t = bytearray(rng.choice(long_tokens))
        op = rng.randrange(4)
        if op == 0:
            t = t[: rng.randint(1, len(t) - 1)]
        elif op == 1:
            t += rng.choice(vocab_tokens)
        elif op == 2:
            t[rng.randrange(len(t))] = rng.randrange(256)
        else:
            t = rng.choice(vocab_tokens) + t
        add("nearmiss", bytes(t))
    return cases


def b64(b):
    return base64.b64encode(b).decode("ascii")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rwkv", default="/tmp/rwkv",
                    help="folder holding the unpacked rwkv wheel (with rwkv/rwkv_tokenizer.py)")
    ap.add_argument("--vocab",
                    default=os.path.join(REPO, "..", "shared", "rwkv_vocab_v20230424.txt"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "tokenizer"))
    args = ap.parse_args()

    official = load_official(args.rwkv)(args.vocab)
    with open(args.vocab, "rb") as f:
        vocab_sha = hashlib.sha256(f.read()).hexdigest()
    vocab_tokens = [official.idx2token[i] for i in sorted(official.idx2token)]
    rng = random.Random(SEED)
    cases = build_corpus(rng, vocab_tokens)

    dist = sorted(d for d in os.listdir(args.rwkv)
                  if d.startswith("rwkv-") and d.endswith(".dist-info"))
    package = dist[-1][: -len(".dist-info")] if dist else "rwkv (version unknown)"
    header = (f"# Generated by tools/golden/gen_tokenizer_fixtures.py (seed {SEED}) with "
              f"TRIE_TOKENIZER from {package};\n# vocab {os.path.basename(args.vocab)} sha256 {vocab_sha}\n")
    os.makedirs(args.out, exist_ok=True)
    n_bytes_inputs = 0
    with open(os.path.join(args.out, "encode_cases.txt"), "w", newline="\n") as f:
        f.write(header + "# name<TAB>input bytes (base64)<TAB>expected ids\n")
        for name, x in cases:
            if isinstance(x, bytes):
                try:  # valid UTF-8 goes through the str API, like real prompts
                    x = x.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            if isinstance(x, str):
                data, ids = x.encode("utf-8"), official.encode(x)
            else:
                data, ids = x, official.encodeBytes(x)
                n_bytes_inputs += 1
            assert official.decodeBytes(ids) == data, name
            f.write(f"{name}\t{b64(data)}\t{' '.join(map(str, ids))}\n")

    byte_cases = [(n, x) for n, x in cases if isinstance(x, bytes)]
    replace_cases = [(n, x) for n, x in byte_cases if not n.startswith("tokens/")]
    replace_cases += [(n, x) for n, x in byte_cases if n.startswith("tokens/")][:100]
    for i in range(1500):  # short byte strings dense in lead and continuation bytes
        alphabet = [0x41, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xE1, 0xED,
                    0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF]
        replace_cases.append((f"short/{i}", bytes(rng.choice(alphabet)
                                                  for _ in range(rng.randint(1, 8)))))
    with open(os.path.join(args.out, "utf8_replace.txt"), "w", newline="\n") as f:
        f.write(header + "# name<TAB>input bytes (base64)<TAB>bytes.decode('utf-8', 'replace'), "
                "UTF-8 (base64)\n")
        for name, x in replace_cases:
            f.write(f"{name}\t{b64(x)}\t{b64(x.decode('utf-8', 'replace').encode('utf-8'))}\n")
    print(f"{len(cases)} encode cases ({n_bytes_inputs} not valid UTF-8), "
          f"{len(replace_cases)} replacement cases -> {args.out}")


if __name__ == "__main__":
    main()
