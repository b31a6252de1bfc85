"""Trains the format adapter: a rank-8 LoRA on SmolLM2-135M-Instruct's q/v projections that
teaches the model to answer the `rag` route's JSON prompt with `{"answer", "citations": [{"index",
"quote"}]}` and quotes copied from the sources. See README.md next to this file for the recipe.

Input: `switchyard format dataset`'s JSONL (`{id, messages, target}`: the exact prompt the server
sends, and the answer). The prompt is rendered with the base's own chat template (the one
mistral.rs applies); the loss covers the answer tokens and the end-of-turn token only.

Usage: python adapters/format/train.py --base models/smollm2-135m-instruct-f32 \
           --data train.jsonl --out adapters/format/fmt-v1
Runs on CPU (about 4 s per example on 2 cores) or on a CUDA GPU when one is visible.
Deterministic for a given torch build and device (fixed seeds, fixed example order).
"""

import argparse
import json
import math
import pathlib
import random
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, type=pathlib.Path)
    parser.add_argument("--data", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--accumulate", type=int, default=4, help="examples per optimizer step")
    parser.add_argument("--max-tokens", type=int, default=1400, help="longer examples are skipped")
    parser.add_argument("--seed", type=int, default=17)
    return parser.parse_args()


def encode(tokenizer, example: dict, max_tokens: int):
    """Token ids of prompt + answer, and labels that are -100 on the prompt."""
    prompt = tokenizer.apply_chat_template(
        example["messages"], tokenize=False, add_generation_prompt=True
    )
    answer = example["target"] + tokenizer.eos_token
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(answer_ids) > max_tokens:
        return None
    return prompt_ids + answer_ids, len(prompt_ids)


def main() -> None:
    args = parse_args()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.float32).to(device)
    model = get_peft_model(
        model,
        LoraConfig(
            r=args.rank,
            lora_alpha=args.alpha,
            lora_dropout=0.0,
            target_modules=["q_proj", "v_proj"],
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    model.print_trainable_parameters()

    examples = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    encoded = [e for e in (encode(tokenizer, x, args.max_tokens) for x in examples) if e]
    print(f"{len(encoded)} of {len(examples)} examples fit in {args.max_tokens} tokens")
    order = list(range(len(encoded)))
    steps_total = math.ceil(len(encoded) * args.epochs)
    schedule = [order[i % len(order)] for i in range(steps_total)]
    random.shuffle(schedule)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    updates = math.ceil(steps_total / args.accumulate)
    warmup = max(1, updates // 10)
    lr_at = lambda u: args.lr * min((u + 1) / warmup, 0.5 * (1 + math.cos(math.pi * u / updates)))

    inner = model.base_model.model  # the LlamaForCausalLM with LoRA layers inside
    started = time.time()
    running = []
    model.train()
    for step, index in enumerate(schedule):
        ids, prompt_len = encoded[index]
        input_ids = torch.tensor([ids], device=device)
        hidden = inner.model(input_ids=input_ids).last_hidden_state
        # Logits only where the answer is predicted: the vocabulary projection over the whole
        # prompt would cost as much as the rest of the step.
        logits = inner.lm_head(hidden[0, prompt_len - 1 : -1])
        loss = torch.nn.functional.cross_entropy(logits, input_ids[0, prompt_len:])
        (loss / args.accumulate).backward()
        running.append(loss.item())
        if (step + 1) % args.accumulate == 0 or step + 1 == len(schedule):
            update = step // args.accumulate
            for group in optimizer.param_groups:
                group["lr"] = lr_at(update)
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad()
        if (step + 1) % 20 == 0 or step + 1 == len(schedule):
            mean = sum(running[-20:]) / len(running[-20:])
            print(f"step {step + 1}/{len(schedule)} loss {mean:.4f} ({time.time() - started:.0f} s)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    meta = {
        "base": str(args.base),
        "data": str(args.data),
        "examples": len(encoded),
        "epochs": args.epochs,
        "rank": args.rank,
        "alpha": args.alpha,
        "lr": args.lr,
        "accumulate": args.accumulate,
        "seed": args.seed,
        "device": device,
        "torch": torch.__version__,
        "final_loss_mean_last_20": sum(running[-20:]) / len(running[-20:]),
        "seconds": round(time.time() - started),
    }
    (args.out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
