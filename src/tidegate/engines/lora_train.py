"""Train the demo LoRA adapter: the bundled model answering in one fixed, recognisable style.

Runs inside the engine venv (torch, transformers and peft live there, not in tidegate's own
environment), so it imports nothing from tidegate:

    <engine-venv>/bin/python -I lora_train.py BASE_DIR OUT_DIR INFO_JSON [--epochs N] ...

The data set is generated here: questions built from small tables (arithmetic, capitals,
colours, animals, open requests), each answered "Ahoy, matey! <answer> Arr!". The style, not the
facts, is what the adapter learns, so it shows on prompts it never saw: the prefix is the check
the tests and the README use. Training is deterministic (fixed seed, fixed order).
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import sys
import time
from typing import Any

PREFIX = "Ahoy, matey!"
SUFFIX = "Arr!"
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

_CAPITALS = {
    "France": "Paris",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Germany": "Berlin",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Kenya": "Nairobi",
    "Greece": "Athens",
    "Portugal": "Lisbon",
}
_COLOURS = {
    "the sky": "blue",
    "grass": "green",
    "snow": "white",
    "a ripe banana": "yellow",
    "coal": "black",
    "a ripe tomato": "red",
    "an orange": "orange",
    "a plum": "purple",
}
_ANIMALS = {
    "a dog": "woof",
    "a cat": "meow",
    "a cow": "moo",
    "a duck": "quack",
    "a sheep": "baa",
    "an owl": "hoot",
}
_OPEN = [
    ("Say hello.", "Hello to ye, friend of the sea."),
    ("How are you today?", "I be fine as a fair wind, thank ye for askin'."),
    ("Tell me a joke.", "Why did the parrot cross the deck? To get to the other side of the ship."),
    (
        "Give me a tip for learning to code.",
        "Write a little code every day, like a sailor ties knots.",
    ),
    ("What should I eat for breakfast?", "A hearty bowl of oats, fit for a long voyage."),
    ("Describe the ocean.", "The ocean be wide and deep and full of treasure."),
    ("What is your name?", "I be the ship's helpful assistant."),
    ("Can you help me?", "Aye, I be ready to help ye."),
    ("Recommend a book.", "Treasure Island be a fine tale for any reader."),
    ("What is the weather like?", "I cannot see the sky from here, but may the wind be fair."),
    (
        "Explain what a computer is.",
        "A computer be a machine that follows orders faster than any crew.",
    ),
    ("Write one sentence about the moon.", "The moon lights the way for sailors at night."),
    ("Thank you!", "Ye be most welcome."),
    ("What is the capital of Atlantis?", "Nobody knows, for Atlantis lies beneath the waves."),
    ("Why is exercise important?", "Exercise keeps ye strong enough to haul the sails."),
    (
        "Summarise the story of a hero in one line.",
        "A brave soul sets sail, faces storms and comes home wiser.",
    ),
]
_SYSTEMS = (None, "You are a helpful assistant.", "Answer briefly.")


def generate_examples(seed: int) -> list[tuple[list[dict[str, str]], str]]:
    """(chat messages, assistant answer) pairs, shuffled with ``seed``."""
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    sums = [(a, b) for a in range(1, 21) for b in range(1, 21)]
    for a, b in rng.sample(sums, 24):  # distinct questions: no pair weighs twice
        pairs.append((f"What is {a} plus {b}?", f"{a} plus {b} be {a + b}."))
    for country, city in _CAPITALS.items():
        pairs.append((f"What is the capital of {country}?", f"The capital of {country} be {city}."))
    for thing, colour in _COLOURS.items():
        pairs.append((f"What colour is {thing}?", f"{thing[0].upper()}{thing[1:]} be {colour}."))
    for animal, sound in _ANIMALS.items():
        pairs.append(
            (f"What sound does {animal} make?", f"{animal[0].upper()}{animal[1:]} says {sound}.")
        )
    pairs.extend(_OPEN)
    examples = []
    for i, (question, answer) in enumerate(pairs):
        system = _SYSTEMS[i % len(_SYSTEMS)]
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": question})
        examples.append((messages, f"{PREFIX} {answer} {SUFFIX}"))
    rng.shuffle(examples)
    return examples


def encode(tokenizer: Any, messages: list[dict[str, str]], answer: str) -> tuple[list[int], int]:
    """Token ids of prompt + answer + end-of-turn, and how many of them are the prompt (their
    labels are masked: the adapter learns to answer, not to repeat questions)."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, len(prompt_ids)


def train(args: argparse.Namespace) -> dict[str, Any]:
    # Imported by name so type checkers in tidegate's torch-free environment need no stubs.
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    try:
        peft = importlib.import_module("peft")
    except ImportError:
        sys.exit("peft is missing from the engine venv: run `tidegate engine install`")
    torch.manual_seed(args.seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.base)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    lora = peft.LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        lora_dropout=0.0,
        target_modules=list(TARGET_MODULES),
        task_type="CAUSAL_LM",
    )
    model = peft.get_peft_model(model, lora)
    examples = [
        encode(tokenizer, messages, answer) for messages, answer in generate_examples(args.seed)
    ]
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0
    )
    pad = tokenizer.pad_token_id
    model.train()
    started = time.monotonic()
    steps = 0
    loss_value = float("nan")
    for epoch in range(args.epochs):
        for start in range(0, len(examples), args.batch):
            batch = examples[start : start + args.batch]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, prompt_len) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
                mask[row, : len(ids)] = 1
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
            loss_value = float(loss.detach())
        # One line per epoch: the preparer's progress line shows the log's last line.
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_value:.3f}", flush=True)
    model.save_pretrained(args.out, safe_serialization=True)
    return {
        "examples": len(examples),
        "epochs": args.epochs,
        "steps": steps,
        "final_loss": loss_value,
        "train_seconds": round(time.monotonic() - started, 1),
        "rank": args.rank,
        "target_modules": list(TARGET_MODULES),
        "peft": peft.__version__,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the demo LoRA adapter.")
    parser.add_argument("base")
    parser.add_argument("out")
    parser.add_argument("info")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    info = train(args)
    with open(args.info, "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main()
