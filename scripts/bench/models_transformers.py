#!/usr/bin/env python3
"""transformers' side of crates/lmgeo-models/examples/bench_forward.rs: tokens per second of a
full all-layer forward (output_hidden_states=True, output_attentions=True, eager attention, no
LM head) on the same 512-token hh-rlhf inputs, and the peak RSS.

    python scripts/bench/models_transformers.py [--tokens 512] [--repeats 7] [--threads 2] [MODEL...]

MODEL: minilm, neox-tiny, pythia-160m-random (as in the Rust example). One model per process is
the fairest for peak RSS; the default runs all three in turn, so later RSS figures include
earlier models.
"""

import argparse
import gzip
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "crates" / "lmgeo-models" / "tests" / "fixtures"


def hh_path() -> Path:
    env = os.environ.get("LMGEO_HH_RLHF")
    if env:
        return Path(env)
    rel = Path("data/hh-rlhf/harmless-base-test.jsonl.gz")
    for parent in [ROOT.resolve(), *ROOT.resolve().parents]:
        if (parent / rel).is_file():
            return parent / rel
    raise SystemExit("hh-rlhf test split not found (set LMGEO_HH_RLHF)")


def minilm_dir() -> Path:
    return Path(os.environ.get("LMGEO_MINILM_DIR", ROOT / "models" / "minilm-l6"))


def token_texts(tok, n: int, count: int) -> list[list[int]]:
    """Same construction as the Rust example: dialogues r, r+1, ... joined by a blank line
    until the ids reach n, cut to n."""
    with gzip.open(hh_path(), "rt", encoding="utf-8") as f:
        chosen = [json.loads(line)["chosen"] for line in f]
    out = []
    for r in range(count):
        text, nxt = "", r
        while True:
            text = chosen[nxt] if not text else text + "\n\n" + chosen[nxt]
            nxt += 1
            ids = tok(text)["input_ids"]
            if len(ids) >= n:
                out.append(ids[:n])
                break
    return out


def load(name: str):
    from transformers import BertModel, GPTNeoXConfig, GPTNeoXModel

    if name == "minilm":
        return BertModel.from_pretrained(minilm_dir(), attn_implementation="eager", add_pooling_layer=False)
    if name == "neox-tiny":
        return GPTNeoXModel.from_pretrained(FIX / "gpt_neox" / "parallel", attn_implementation="eager")
    if name == "pythia-160m-random":
        cfg = json.loads((FIX / "gpt_neox" / "pythia_counts.json").read_text())["pythia-160m"]["config"]
        cfg = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
        config = GPTNeoXConfig(**cfg)
        config._attn_implementation = "eager"
        torch.manual_seed(0)
        return GPTNeoXModel(config)
    raise SystemExit(f"unknown model {name}")


def to_host(out):
    """Copies every hidden state and attention map to host memory, as lmgeo
    hands them back; on a GPU this is part of the cost of an extraction."""
    for group in (out.hidden_states, out.attentions):
        for t in group or ():
            t.cpu()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where the model runs")
    p.add_argument("models", nargs="*", default=["minilm", "neox-tiny", "pythia-160m-random"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    texts = token_texts(tok, args.tokens, args.repeats + 1)
    print(
        f"threads: {torch.get_num_threads()} (torch {torch.__version__}), tokens per forward: "
        f"{args.tokens}, timed runs: {args.repeats} (+1 warm-up)"
    )
    for name in args.models:
        t0 = time.perf_counter()
        model = load(name).eval().to(args.device)
        load_s = time.perf_counter() - t0
        times, cpu = [], []
        with torch.inference_mode():
            for i, ids in enumerate(texts):
                # The tiny fixture's vocabulary is 1000 ids (same mapping as the Rust example).
                x = torch.tensor([[t % model.config.vocab_size for t in ids]], device=args.device)
                t, c = time.perf_counter(), time.process_time()
                out = model(x, output_hidden_states=True, output_attentions=True)
                to_host(out)
                dt, dc = time.perf_counter() - t, time.process_time() - c
                assert len(out.attentions) == model.config.num_hidden_layers
                del out
                if i > 0:
                    times.append(dt)
                    cpu.append(dc)
        median = statistics.median(times)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{name:<20} {args.tokens / median:>7.0f} tokens/s  (median {median * 1e3:.0f} ms, "
            f"min {min(times) * 1e3:.0f} ms, CPU {statistics.median(cpu):.2f} s/forward; "
            f"load {load_s:.1f} s; peak RSS so far {rss:.0f} MiB)"
        )


if __name__ == "__main__":
    main()
