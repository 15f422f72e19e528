"""The planner's LoRA slots: bytes against hand computations, and their cost in KV space."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.plan.errors import PlanInputError
from tidegate.plan.gpus import find_gpu
from tidegate.plan.lora import lora_bytes
from tidegate.plan.model_source import load_model_spec
from tidegate.plan.model_spec import ModelSpec
from tidegate.plan.recommend import PlanRequest, recommend, recommend_cpu

CONFIGS = Path(__file__).parent.parent / "data" / "model_configs"


def spec(name: str) -> ModelSpec:
    return load_model_spec(str(CONFIGS / f"{name}.json"))


def test_llama_8b_slot_by_hand() -> None:
    # q 4096→4096, k and v 4096→1024, o 4096→4096; gate and up 4096→14336, down 14336→4096.
    attention = (4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096)
    mlp = 2 * (4096 + 14336) + (14336 + 4096)
    per_slot = 16 * 32 * (attention + mlp) * 2
    assert per_slot == 80 << 20  # 80 MiB per adapter slot at rank 16
    assert lora_bytes(spec("llama-3.1-8b"), max_loras=4, rank=16) == 4 * per_slot
    assert lora_bytes(spec("llama-3.1-8b"), max_loras=0, rank=16) == 0


def test_smollm_slot_by_hand() -> None:
    attention = (576 + 576) + 2 * (576 + 192) + (576 + 576)
    mlp = 2 * (576 + 1536) + (1536 + 576)
    assert lora_bytes(spec("smollm2-135m"), max_loras=1, rank=8) == 8 * 30 * (attention + mlp) * 2


def test_slots_come_out_of_the_kv_space() -> None:
    gpu = find_gpu("H100-80GB")
    plain = PlanRequest(context=8192, concurrency=32)
    with_lora = PlanRequest(context=8192, concurrency=32, adapters=8, lora_rank=64)
    base = recommend(spec("llama-3.1-8b"), plain, gpu=gpu, tp=1)
    lora = recommend(spec("llama-3.1-8b"), with_lora, gpu=gpu, tp=1)
    assert base.chosen is not None and lora.chosen is not None
    assert lora.lora_bytes == 8 * 4 * (80 << 20)  # rank 64 is four times rank 16
    assert base.chosen.kv_budget_per_device - lora.chosen.kv_budget_per_device == lora.lora_bytes
    two = recommend(spec("llama-3.1-8b"), with_lora, gpu=gpu, tp=2)
    assert two.chosen is not None
    assert (
        two.options[0].overhead_per_device
        - recommend(spec("llama-3.1-8b"), plain, gpu=gpu, tp=2).options[0].overhead_per_device
        == lora.lora_bytes // 2
    )


def test_cpu_plans_show_the_slots() -> None:
    plan = recommend_cpu(spec("smollm2-135m"), PlanRequest(context=2048, concurrency=4, adapters=2))
    assert plan.options[0].overhead_per_device == plan.lora_bytes > 0


@pytest.mark.parametrize(("adapters", "rank"), [(-1, 16), (300, 16), (4, 0), (4, 1024)])
def test_out_of_range_lora_requests_are_refused(adapters: int, rank: int) -> None:
    with pytest.raises(PlanInputError):
        recommend(
            spec("smollm2-135m"),
            PlanRequest(context=2048, concurrency=4, adapters=adapters, lora_rank=rank),
        )


def test_the_plan_command_counts_adapters() -> None:
    import json

    from typer.testing import CliRunner

    from tidegate.commands.plan import plan_app

    args = ["--model", str(CONFIGS / "llama-3.1-8b.json"), "--gpu", "H100-80GB", "--tp", "1"]
    result = CliRunner().invoke(plan_app, [*args, "--adapters", "4", "--lora-rank", "16", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["lora_bytes"] == 4 * (80 << 20)
    assert plan["profile"]["engines"]["max_loras"] == 4
    assert plan["request"]["adapters"] == 4
