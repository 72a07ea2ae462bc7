"""The pre-run estimate: exact parameter counts, memory by sharding, time that adds up."""

from sx_dagster.core.estimate import KNOWN_SHAPES, ModelShape, estimate, format_estimate, train_memory_gb


def test_parameter_counts_of_the_paper_models():
    assert ModelShape(*KNOWN_SHAPES["mistralai/Mistral-7B-v0.1"]).params == 7_241_732_096
    assert ModelShape(*KNOWN_SHAPES["EleutherAI/llemma_7b"]).params == 6_738_546_688
    assert ModelShape(*KNOWN_SHAPES["deepseek-ai/deepseek-math-7b-base"]).params == 6_910_365_696


def test_memory_shrinks_with_sharding_and_adapters():
    p = 7_000_000_000
    full = [train_memory_gb(p, 4, False, False, z, False) for z in (0, 1, 2, 3)]
    assert full[0] == 16 * 7 and full == sorted(full, reverse=True) and full[3] == 16 * 7 / 4
    assert train_memory_gb(p, 1, True, False, 0, True) == 14  # LoRA: bf16 base, no reference copy
    assert train_memory_gb(p, 1, True, True, 0, True) < 4  # QLoRA: 4-bit base
    assert train_memory_gb(p, 1, False, False, 0, True) == 16 * 7 + 14  # full DPO adds the reference


def test_estimate_scales_with_devices_and_flags_what_does_not_fit():
    shape = ModelShape(*KNOWN_SHAPES["mistralai/Mistral-7B-v0.1"])
    args = dict(task="gsm8k", n_train=7473, n_test=1319, n_samples=100, k=4, epochs={"sft": 3, "rft": 3, "dpo": 3})
    one = estimate(shape, device="cuda", devices=1, **args)
    four = estimate(shape, device="cuda", devices=4, zero=2, **args)
    assert [r.stage for r in one][0] == "sft_checkpoint" and len(one) == 6
    assert abs(sum(r.seconds for r in one) / sum(r.seconds for r in four) - 4) < 1e-6
    text = format_estimate(one, shape.params, "cuda", 1, 80)
    assert "more than one device holds" in text  # 16 B/param does not fit one 80 GB GPU
    assert "more than one device holds" not in format_estimate(four[1:2], shape.params, "cuda", 4, 80)


def test_a_tiny_model_on_a_gpu_is_bounded_by_its_step_and_generation_floors():
    # The 0.58M default on an H200 took 63 ms per SFT step and sampled 11.4k tokens/s; FLOPs alone said 0.0 s.
    tiny = ModelShape(512, 128, 2, 512, 4, 4, True)
    args = dict(task="synthetic", n_train=8000, n_test=1000, n_samples=8, k=4, epochs={"sft": 2, "rft": 1.5, "dpo": 1})
    rows = {r.stage: r for r in estimate(tiny, device="cuda", devices=1, batches={"sft": (16, 1), "rft": (16, 1), "dpo": (16, 1)}, **args)}
    assert rows["sft_checkpoint"].steps == 1000 and abs(rows["sft_checkpoint"].seconds - 63) < 1
    assert abs(rows["sampled_rationales"].seconds - rows["sampled_rationales"].tokens / 1.1e4) < 1e-6
    # a 7B model is far above both floors: unchanged
    big = ModelShape(*KNOWN_SHAPES["mistralai/Mistral-7B-v0.1"])
    sft = estimate(big, device="cuda", devices=1, batches={"sft": (16, 1), "rft": (16, 1), "dpo": (16, 1)}, **{**args, "task": "gsm8k"})[0]
    assert sft.seconds == 6 * big.params * sft.tokens / 3e14
