"""The tiny GPT-NeoX fixture of the extraction end-to-end test (tests/extract_cli.rs).

Run from the repository root with the reference stack
(`cargo xtask golden`, or /path/to/venv/bin/python scripts/golden/e2e_neox.py).

Writes tests/fixtures/tiny-neox/: a randomly initialised GPTNeoXForCausalLM
(config.json, model.safetensors) with a word-level tokenizer.json built from
tests/fixtures/tiny-corpus.jsonl, and golden.json: for every text, its token
ids and, per layer, the effective rank and normalised coding length of the
hidden states that transformers computes, with the entropy computed here in
numpy (centre, unit rows, eigenvalues of the Gram matrix, eps = 0.1).

Layers: hidden_states[i] for i < L are the embedding and block outputs, as
lmgeo numbers them; transformers' last entry is after the final LayerNorm,
which lmgeo stores as layer L + 1.
"""
import json
import pathlib

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

ROOT = pathlib.Path("tests/fixtures")
OUT = ROOT / "tiny-neox"
OUT.mkdir(parents=True, exist_ok=True)
texts = [json.loads(line) for line in (ROOT / "tiny-corpus.jsonl").read_text().splitlines() if line.strip()]

pre = pre_tokenizers.Whitespace()
words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t["text"])})
vocab = {"[UNK]": 0}
for w in words:
    vocab[w] = len(vocab)
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
tok.pre_tokenizer = pre
tok.save(str(OUT / "tokenizer.json"))

torch.manual_seed(7)
config = GPTNeoXConfig(
    vocab_size=128,
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=256,
    rotary_pct=0.25,
    max_position_embeddings=128,
    use_parallel_residual=True,
    tie_word_embeddings=False,
)
config._attn_implementation = "eager"
assert len(vocab) <= config.vocab_size
model = GPTNeoXForCausalLM(config).eval()
model.save_pretrained(OUT, safe_serialization=True)


def entropy(z, eps=0.1):
    z = z.astype(np.float64)
    z = z - z.mean(axis=0, keepdims=True)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n, d = z.shape
    lam = np.clip(np.linalg.eigvalsh(z @ z.T / n), 0.0, None)
    p = lam[lam > 0] / lam.sum()
    erank = float(np.exp(-(p * np.log(p)).sum()))
    coding = 0.5 * (n + d) * np.log1p(d * lam / eps**2).sum()
    maximum = 0.5 * (n + d) * d * np.log1p(1 / eps**2)
    return erank, float(coding / maximum)


golden = {}
with torch.no_grad():
    for t in texts:
        ids = tok.encode(t["text"]).ids
        out = model(torch.tensor([ids]), output_hidden_states=True)
        states = [h[0].numpy() for h in out.hidden_states]
        layers = {}
        for i, h in enumerate(states):
            layer = i if i < config.num_hidden_layers else config.num_hidden_layers + 1
            erank, coding = entropy(h)
            layers[str(layer)] = {"effective_rank": erank, "normalised_coding_length": coding}
        golden["tiny:" + t["id"]] = {"ids": ids, "layers": layers}
(OUT / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
print("wrote", OUT)
