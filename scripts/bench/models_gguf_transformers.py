#!/usr/bin/env python3
"""The transformers side of crates/lmgeo-models/examples/bench_gguf.rs: a full
all-layer extraction (output_hidden_states=True, output_attentions=True,
eager attention, float32, 2 threads) of hh-rlhf dialogues cut to a fixed
length, with the GGUF models loaded by gguf_file=.

    python scripts/bench/models_gguf_transformers.py [--tokens 512] [--texts 4] [--model smollm2-135m]...

Same texts as the Rust example: the first --texts `chosen` dialogues with at
least --tokens tokens, cut to that length. One untimed warm-up pass. Peak RSS
is ru_maxrss of this process (it includes the load, which dequantises).
"""

import argparse
import gzip
import json
import os
import resource
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3-270m": "gemma-3-270m-q4_k_m.gguf",
}


def to_host(out):
    """Copies every hidden state and attention map to host memory, as lmgeo
    hands them back; on a GPU this is part of the cost of an extraction."""
    for group in (out.hidden_states, out.attentions):
        for t in group or ():
            t.cpu()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--texts", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", action="append")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where the model runs")
    ap.add_argument(
        "--all-logits",
        action="store_true",
        help="compute logits at every position (transformers' default); by default only the "
        "last position's, as the Rust benchmark requests (logits_to_keep=1)",
    )
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("LMGEO_MODELS_DIR", ROOT / "models")))
    ap.add_argument("--hh", type=Path, default=Path(os.environ.get("LMGEO_HH_RLHF", ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with gzip.open(args.hh, "rt", encoding="utf-8") as f:
        texts = [json.loads(l)["chosen"] for l in f if l.strip()]
    print(
        f"threads: torch {torch.get_num_threads()}; {args.tokens} tokens per text, {args.texts} texts; "
        f"logits at {'all positions' if args.all_logits else 'the last position'}; torch {torch.__version__}"
    )
    for name in args.model or list(FILES):
        folder = args.models_dir / name
        t0 = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=FILES[name])
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=FILES[name], dtype=torch.float32, attn_implementation="eager"
        ).eval().to(args.device)
        load_s = time.perf_counter() - t0
        inputs = []
        for t in texts:
            ids = tok(t)["input_ids"]
            if len(ids) >= args.tokens:
                inputs.append(ids[: args.tokens])
            if len(inputs) == args.texts:
                break
        times = []
        kw = dict(output_hidden_states=True, output_attentions=True, use_cache=False)
        if not args.all_logits:
            kw["logits_to_keep"] = 1
        with torch.no_grad():
            model(torch.tensor([inputs[0]], device=args.device), **kw)
            for ids in inputs:
                t = time.perf_counter()
                out = model(torch.tensor([ids], device=args.device), **kw)
                to_host(out)
                times.append(time.perf_counter() - t)
                del out
        total = sum(times)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        s = sorted(times)
        print(
            f"{name:<14} load {load_s:5.1f} s | {args.tokens * len(inputs) / total:7.1f} tok/s "
            f"(median {s[len(s) // 2]:.3f} s per text, min {s[0]:.3f}) | peak RSS {rss:.0f} MiB"
        )


if __name__ == "__main__":
    main()
