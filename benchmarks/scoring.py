"""Scoring throughput: leadsel's pass vs a naive loop, and the effective FLOP/s vs a measured peak.

    python benchmarks/scoring.py [--n 64] [--batch-tokens 4096]

On the same real pool samples (the first N of the bundled pool) and the bundled
SmolLM2-135M-Instruct, in one process:
  * leadsel: ``loss_pass`` (length-bucketed batches, bf16 autocast where supported, logits only
    at response positions);
  * naive: one sample at a time, fp32, full logits and the HF ``loss`` (as the official LEAD and
    Cherry-LLM code do);
and prints samples/s of both, their ratio, the largest difference of the losses, and leadsel's
effective model FLOP/s (2 x parameters x tokens/s) against the bf16 matrix-multiply peak measured
on this machine in the same run (the best of a few square and model-shaped matmuls).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def measure_peak_bf16(seconds: float = 2.0) -> tuple[float, str]:
    """Best bf16 matmul FLOP/s over a few shapes (square, and the model's MLP shapes)."""
    best, best_shape = 0.0, ""
    for m, k, n in [(2048, 2048, 2048), (4096, 4096, 4096), (2048, 576, 1536), (2048, 1536, 576), (4096, 576, 49152)]:
        a = torch.randn(m, k, dtype=torch.bfloat16)
        b = torch.randn(k, n, dtype=torch.bfloat16)
        for _ in range(2):
            a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            a @ b
            reps += 1
        flops = 2 * m * k * n * reps / (time.perf_counter() - t0)
        if flops > best:
            best, best_shape = flops, f"{m}x{k}x{n}"
    return best, best_shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="pool samples to score")
    ap.add_argument("--batch-tokens", type=int, default=4096)
    args = ap.parse_args()

    from leadsel.config import RunConfig, ScoringConfig
    from leadsel.data.bundled import build_bundled_pool
    from leadsel.data.encode import collate, encode
    from leadsel.data.load import load_pool
    from leadsel.model.load import load_model, load_tokenizer, resolve_model
    from leadsel.model.precision import choose_precision
    from leadsel.scoring.passes import loss_pass
    from leadsel.utils import cache_root

    cfg = RunConfig()
    path = resolve_model(cfg.model.name)
    tok = load_tokenizer(path)
    built = build_bundled_pool(cfg.data.bundled, lambda s: len(tok(s, add_special_tokens=False)["input_ids"]),
                               cache_root(), tokenizer_name=cfg.model.name, progress=False)
    samples, _ = load_pool(built.pool)
    pool = encode(samples[: args.n], tok, cfg.encoding.max_length)
    precision, why = choose_precision("auto", "cpu")
    # as a run scores: the LoRA model with its adapter disabled, fp32 weights, bf16 autocast
    model = load_model(path, finetuning="lora", lora=cfg.model.lora).eval()
    naive_model = load_model(path, finetuning="full").eval()  # what the official code runs: fp32
    n_params = sum(p.numel() for p in naive_model.parameters())
    tokens = int(pool.lengths.sum())

    class Acc:
        device = torch.device("cpu")
        process_index, num_processes, is_main_process, is_local_main_process = 0, 1, True, True

    scoring = ScoringConfig(batch_tokens=args.batch_tokens, max_batch_size=32)
    with model.disable_adapter():  # base-model scoring, exactly as a run does it
        loss_pass(model, pool, accelerator=Acc(), pad_id=tok.pad_token_id, precision=precision,  # warm-up
                  scoring=ScoringConfig(batch_tokens=512, max_batch_size=4), progress=False)
        t0 = time.perf_counter()
        ours, _ = loss_pass(model, pool, accelerator=Acc(), pad_id=tok.pad_token_id, precision=precision,
                            scoring=scoring, progress=False)
        t_ours = time.perf_counter() - t0

    naive = np.zeros(len(pool), dtype=np.float32)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(len(pool)):
            b = collate(pool, [i], tok.pad_token_id)
            naive[i] = float(naive_model(**b).loss)
    t_naive = time.perf_counter() - t0

    peak, shape = measure_peak_bf16()
    eff = 2 * n_params * tokens / t_ours
    print(f"samples: {len(pool)} real pool samples, {tokens} tokens (mean {tokens / len(pool):.0f}), "
          f"model {n_params / 1e6:.1f}M parameters, torch threads {torch.get_num_threads()}")
    print(f"leadsel pass ({precision}: {why}; batch_tokens {args.batch_tokens}): "
          f"{len(pool) / t_ours:.2f} samples/s ({t_ours:.1f} s)")
    print(f"naive loop (batch 1, fp32, full logits): {len(pool) / t_naive:.2f} samples/s ({t_naive:.1f} s)")
    print(f"speed-up: {t_naive / t_ours:.2f}x   max |loss difference|: {np.abs(ours - naive).max():.4f} "
          f"(bf16 vs fp32)" if precision == "bf16" else f"speed-up: {t_naive / t_ours:.2f}x")
    print(f"effective model FLOP/s (2 x params x tokens/s): {eff / 1e9:.1f} GFLOP/s")
    print(f"measured bf16 matmul peak: {peak / 1e9:.1f} GFLOP/s (best shape {shape})")
    print(f"fraction of peak: {eff / peak:.1%}")


if __name__ == "__main__":
    main()
