"""Does the HF backend's prefix KV cache pay on GSM8K-length prompts? (issue 11 part 5)

    python benchmarks/prefix_cache.py [--questions 16] [--hidden 512 --layers 8]

Builds a Llama of a few tens of millions of parameters locally (random weights: the cost of
a forward pass does not depend on what the weights learned) with a BPE trained on GSM8K text
from ../shared/data, then runs the exploration pattern on GSM8K train questions: for each
question, the prefixes question + gold steps 1..i for every i, k samples each (paper k=4),
``--new`` new tokens. Times the same generation with the prefix cache off and on, checks the
samples are identical, and prints wall time and prefill tokens. Appends a row to
benchmarks/results/prefix_cache_runs.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
GSM8K = HERE.parents[1] / "shared" / "data" / "gsm8k" / "train.jsonl"
RESULTS = HERE / "results" / "prefix_cache_runs.csv"


def main() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from sx_dagster.core.prompts import prefix_prompt
    from sx_dagster.core.steps import split_steps
    from sx_dagster.ml.generation import HFBackend, SamplingParams
    from sx_dagster.ml.tiny import train_tokenizer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=16)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--new", type=int, default=48)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:2000]]
    tok = train_tokenizer([r["query"] + "\n" + r["response"] for r in rows], 4000)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=1024, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg)
    n_params = sum(x.numel() for x in model.parameters())
    prompts = []
    for r in rows[: args.questions]:
        steps = split_steps(r["response"].split("####")[0], "gsm8k")
        prompts += [prefix_prompt(r["query"], steps, i, "gsm8k") for i in range(len(steps))]
    lengths = [len(tok(x)["input_ids"]) for x in prompts]
    print(f"{n_params / 1e6:.1f}M parameters; {len(prompts)} prefixes of {args.questions} GSM8K questions, "
          f"prompt tokens mean {sum(lengths) / len(lengths):.0f} max {max(lengths)}; k={args.k}, {args.new} new tokens")  # fmt: skip
    params = SamplingParams(args.k, 0.7, 1.0, args.new, 0, "gsm8k")
    out, texts = [], {}
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        tok.save_pretrained(d)
        for cache in (False, True):
            be = HFBackend(d, "cpu", "float32", args.batch, prefix_cache=cache)
            t = time.perf_counter()
            # exploration asks step i+1 right after step i: one call per prefix depth, as the driver does
            depth: dict[int, list[str]] = {}
            for x in prompts:
                depth.setdefault(x.count("\n"), []).append(x)
            gens = [g for _, group in sorted(depth.items()) for g in be.generate(group, params)]
            secs = time.perf_counter() - t
            texts[cache] = [[g.text for g in gs] for gs in gens]
            out.append({"prefix_cache": cache, "seconds": round(secs, 1), "prefill_tokens": be.stats.prefill_tokens,
                        "prompt_tokens": be.stats.prompt_tokens, "generated_tokens": be.stats.generated_tokens})  # fmt: skip
            be.close()
    same = texts[False] == texts[True]
    print("| prefix cache | wall s | prefill tokens computed | prompt tokens | generated |\n|---|---:|---:|---:|---:|")
    for r in out:
        on = "on" if r["prefix_cache"] else "off"
        print(f"| {on} | {r['seconds']} | {r['prefill_tokens']:,} | {r['prompt_tokens']:,} | {r['generated_tokens']:,} |")
    print(f"identical samples: {same}; speed-up {out[0]['seconds'] / max(out[1]['seconds'], 1e-9):.2f}x")
    new = not RESULTS.exists()
    with RESULTS.open("a", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["date", "params_m", "prefixes", "k", "new_tokens", "off_s", "on_s", "prefill_off", "prefill_on", "identical"]
        )
        if new:
            w.writeheader()
        w.writerow({"date": dt.datetime.now().isoformat(timespec="minutes"), "params_m": round(n_params / 1e6, 1), "prefixes": len(prompts),
                    "k": args.k, "new_tokens": args.new, "off_s": out[0]["seconds"], "on_s": out[1]["seconds"],
                    "prefill_off": out[0]["prefill_tokens"], "prefill_on": out[1]["prefill_tokens"], "identical": same})  # fmt: skip


if __name__ == "__main__":
    main()
