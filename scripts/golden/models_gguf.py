#!/usr/bin/env python3
"""Golden files for lmgeo-models' GGUF models (SmolLM2-135M-Instruct Q4_1 and
Gemma 3 270M Q4_K_M), computed by Hugging Face transformers loading the same
GGUF files with `gguf_file=` (weights dequantised to float32).

Usage (from the repository root, with the pinned stack of requirements.txt):

    python scripts/golden/models_gguf.py smollm2 [--models-dir models]
    python scripts/golden/models_gguf.py gemma3
    python scripts/golden/models_gguf.py all
    python scripts/golden/models_gguf.py all --only tokenizer

The GGUF files are looked up in --models-dir (default: $LMGEO_MODELS_DIR or
./models) under the names the Rust registry gives them:
    smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
    gemma3-270m/gemma-3-270m-q4_k_m.gguf
(`cargo run -p lmgeo-models --example fetch_model -- NAME` puts them there).

Weights are too big to commit, so the outputs are compact fingerprints:
  tests/fixtures/<model>/golden.json          per-layer norms, fixed coordinates,
                                              attention entries, top-5 logits,
                                              greedy continuations
  tests/fixtures/<model>/tokenizer_ids.json.gz  ids of 300 hh-rlhf dialogues and
                                              hand-written edge cases, and a digest
                                              of the ids of every dialogue of the
                                              split (chosen and rejected)

Everything is deterministic for a given stack: CPU, float32, eager attention.
"""

import argparse
import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates" / "lmgeo-models" / "tests" / "fixtures"
DEFAULT_HH = ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"

MODELS = {
    "smollm2": dict(
        registry="smollm2-135m",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "gemma3": dict(
        registry="gemma3-270m",
        file="gemma-3-270m-q4_k_m.gguf",
    ),
}

# Number of hh-rlhf `chosen` dialogues whose ids are recorded.
N_TOKENIZER_TEXTS = 300

# Hand-written strings that exercise what dialogues rarely do.
EDGE_CASES = [
    "",
    " ",
    "  leading spaces and trailing  ",
    "The quick brown fox jumps over the lazy dog.",
    "Numbers: 0 7 42 2023 3.14159 1,000,000 and 12345678901234567890",
    "Tabs\tand\nnewlines\r\nand\n\n\nmore\t\t\tend",
    "Unicode: héllo naïve café – “quotes” — 😀🎉 日本語のテキスト Ελληνικά العربية",
    "Code: def f(x):\n    return x**2  # comment\n\tif a != b: pass",
    "Specials in text: <|im_start|>user\nhi<|im_end|> <bos><start_of_turn>model <eos>",
    "Many    internal     spaces      here",
    "\u2581already a metaspace \u2581\u2581 char",
    "Byte fallback: \u0000\u0001 \U0001F9EC \u200b zero-width",
]

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a; the Rust tests recompute it to check they read the same texts."""
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_hh(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def g9(x) -> float:
    """A float32 value with the 9 significant digits that identify it."""
    return float(f"{float(x):.9g}")


def pick_coords(n: int, d: int, seed: int):
    """Fixed (row, col) pairs: corners, middles, and a few seeded random ones."""
    rows = sorted({0, n // 2, n - 1})
    cols = sorted({0, d // 2, d - 1})
    pairs = [(r, c) for r in rows for c in cols]
    rng = np.random.default_rng(seed)
    for _ in range(5):
        pairs.append((int(rng.integers(n)), int(rng.integers(d))))
    return pairs


def attn_pairs(n: int):
    """(query, key) entries of the attention matrix to record."""
    qs = sorted({n // 2, n - 1})
    pairs = [(0, 0)]
    for q in qs:
        for k in sorted({0, q // 2, q}):
            pairs.append((q, k))
    return pairs


def matrix_fingerprint(m: np.ndarray, seed: int):
    n, d = m.shape
    coords = pick_coords(n, d, seed)
    return dict(
        frobenius=float(np.linalg.norm(m.astype(np.float64))),
        max_abs=g9(np.abs(m).max()),
        row_norms=[float(np.linalg.norm(m[r].astype(np.float64))) for r in sorted({0, n // 2, n - 1})],
        coords=[[r, c, g9(m[r, c])] for r, c in coords],
    )


def load(models_dir: Path, key: str, with_model: bool = True):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = MODELS[key]
    folder = models_dir / spec["registry"]
    path = folder / spec["file"]
    if not path.exists():
        sys.exit(f"missing {path}; fetch it first (see the module docstring)")
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=spec["file"])
    if not with_model:
        return tok, None, path
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=spec["file"], dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    return tok, model, path


def ids_fnv(ids) -> str:
    """FNV-1a of the ids as little-endian u32, as the Rust test computes it."""
    return f"{fnv1a64(np.asarray(ids, dtype='<u4').tobytes()):016x}"


def tokenizer_digests(tok, records):
    """A compact check on every dialogue of the split (chosen and rejected)."""
    out = []
    for i, rec in enumerate(records):
        for side in ("chosen", "rejected"):
            ids = tok(rec[side])["input_ids"]
            out.append([f"hh:{i}:{side}", len(ids), ids_fnv(ids)])
    return out


def tokenizer_ids(tok, records):
    entries = []
    for i, rec in enumerate(records[:N_TOKENIZER_TEXTS]):
        text = rec["chosen"]
        entries.append(
            dict(
                source=f"hh:{i}:chosen",
                fnv=f"{fnv1a64(text.encode('utf-8')):016x}",
                ids=tok(text)["input_ids"],
            )
        )
    for j, text in enumerate(EDGE_CASES):
        entries.append(
            dict(
                source=f"edge:{j}",
                text=text,
                ids=tok(text)["input_ids"],
                ids_no_special=tok(text, add_special_tokens=False)["input_ids"],
                decoded=tok.decode(tok(text, add_special_tokens=False)["input_ids"]),
            )
        )
    return entries


def choose_texts(tok, records):
    """Three fingerprint texts: a short dialogue, a medium one, and a long one
    cut to 640 tokens (past Gemma's 512-token sliding window)."""
    lengths = [(len(tok(r["chosen"])["input_ids"]), i) for i, r in enumerate(records[:400])]
    short = next(i for n, i in lengths if 40 <= n <= 90)
    medium = next(i for n, i in lengths if 200 <= n <= 320)
    long = next(i for n, i in lengths if n >= 700)
    return [(short, None), (medium, None), (long, 640)]


def hidden_fingerprints(model, tok, records, choices):
    layers = model.model.layers
    texts = []
    for (idx, cut) in choices:
        text = records[idx]["chosen"]
        ids = tok(text)["input_ids"]
        if cut is not None:
            ids = ids[:cut]
        captured = {}
        hooks = []
        for li, layer in enumerate(layers):
            def hook(_m, _inp, out, li=li):
                captured[li] = (out[0] if isinstance(out, tuple) else out).detach()
            hooks.append(layer.register_forward_hook(hook))
        with torch.no_grad():
            out = model(
                torch.tensor([ids]),
                output_hidden_states=True,
                output_attentions=True,
                use_cache=False,
            )
        for h in hooks:
            h.remove()
        n = len(ids)
        emb = out.hidden_states[0][0].numpy()
        final = out.hidden_states[-1][0].numpy()
        layer_fp = []
        for li in range(len(layers)):
            m = captured[li][0].numpy()
            layer_fp.append(matrix_fingerprint(m, seed=1000 + li))
        attn_fp = []
        pairs = attn_pairs(n)
        for li, a in enumerate(out.attentions):
            a = a[0].numpy()  # heads x n x n
            heads = []
            for h in range(a.shape[0]):
                ah = a[h]
                last = ah[n - 1]
                heads.append(
                    dict(
                        frobenius=float(np.linalg.norm(ah.astype(np.float64))),
                        entries=[[q, k, g9(ah[q, k])] for q, k in pairs],
                        row_sums=[float(ah[q].astype(np.float64).sum()) for q in (n // 2, n - 1)],
                        last_row_argmax=int(last.argmax()),
                        last_row_max=g9(last.max()),
                    )
                )
            attn_fp.append(heads)
        logits = out.logits[0].numpy()
        top = {}
        for p in sorted({n // 2, n - 1}):
            order = np.argsort(-logits[p], kind="stable")[:5]
            top[str(p)] = [[int(t), g9(logits[p, t])] for t in order]
        texts.append(
            dict(
                source=f"hh:{idx}:chosen",
                fnv=f"{fnv1a64(text.encode('utf-8')):016x}",
                cut=cut,
                ids=ids,
                embeddings=matrix_fingerprint(emb, seed=7),
                layers=layer_fp,
                final_norm=matrix_fingerprint(final, seed=11),
                attentions=attn_fp,
                top5=top,
            )
        )
    return texts


def greedy(model, tok, records):
    prompts = []
    for idx in (3, 10, 25):
        text = records[idx]["chosen"]
        cut = text.index("\n\nAssistant:") + len("\n\nAssistant:")
        prompt = text[:cut]
        ids = tok(prompt)["input_ids"]
        with torch.no_grad():
            gen = model.generate(
                torch.tensor([ids]),
                max_new_tokens=20,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.eos_token_id,
            )
        prompts.append(dict(source=f"hh:{idx}:chosen:first-turn", prompt_ids=ids, new_ids=gen[0][len(ids):].tolist()))
    return prompts


def run(key: str, models_dir: Path, hh: Path, only: str | None):
    import gguf
    import transformers

    records = read_hh(hh)
    tok, model, path = load(models_dir, key, with_model=(only != "tokenizer"))
    out_dir = FIXTURES / key
    out_dir.mkdir(parents=True, exist_ok=True)

    ids = tokenizer_ids(tok, records)
    digests = tokenizer_digests(tok, records)
    with gzip.GzipFile(out_dir / "tokenizer_ids.json.gz", "wb", mtime=0) as f:
        payload = dict(model=key, texts=ids, digests=digests)
        f.write(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if only == "tokenizer":
        print(f"{key}: wrote {out_dir} (tokenizer only)")
        return

    choices = choose_texts(tok, records)
    golden = dict(
        model=key,
        gguf_file=path.name,
        gguf_sha256=sha256_file(path),
        stack=dict(torch=torch.__version__, transformers=transformers.__version__, gguf=gguf.__version__ if hasattr(gguf, "__version__") else "0.19"),
        n_params=int(sum(p.numel() for p in model.parameters())),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        texts=hidden_fingerprints(model, tok, records, choices),
        greedy=greedy(model, tok, records),
    )
    with open(out_dir / "golden.json", "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    print(f"{key}: wrote {out_dir}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["smollm2", "gemma3", "all"])
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("LMGEO_MODELS_DIR", ROOT / "models")))
    ap.add_argument("--hh", type=Path, default=DEFAULT_HH)
    ap.add_argument("--only", choices=["tokenizer"], help="write only the tokenizer fixtures")
    args = ap.parse_args()
    keys = ["smollm2", "gemma3"] if args.which == "all" else [args.which]
    for k in keys:
        run(k, args.models_dir, args.hh, args.only)


if __name__ == "__main__":
    main()
