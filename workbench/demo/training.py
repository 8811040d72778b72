"""The training loop shared by the tiny experts (all weights) and the real demo's LoRA specialists."""
from __future__ import annotations

import math
import time
import zlib
from collections.abc import Sequence


def derive_seed(seed: int, name: str) -> int:
    """The seed of one expert: derived from the build ``seed`` and the expert's name (stable across runs)."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**31 - 1)


def count_parameters(model) -> int:
    """Unique parameters (tied embeddings counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


class deterministic:  # noqa: N801 - used like a function: ``with deterministic():``
    """Context manager: deterministic torch algorithms, restored on exit."""

    def __enter__(self):
        import torch

        self._prev = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        return self

    def __exit__(self, *exc):
        import torch

        torch.use_deterministic_algorithms(self._prev)
        return False


def fine_tune(model, params, examples: Sequence[tuple[list[int], list[int]]], *, steps: int, seed: int,
              pad_id: int, batch_size: int, learning_rate: float, betas: tuple[float, float],
              weight_decay: float, warmup_steps: int, name: str = "", progress=None):
    """AdamW on ``params`` over seeded batches of ``(prompt_ids, answer_ids)``, loss on the answers.

    Linear warm-up, then cosine decay to 10% of ``learning_rate``; gradients clipped to norm 1.
    Returns ``(losses, seconds, cpu_seconds)``. Used by the tiny experts (all weights) and the
    real demo's LoRA specialists (the adapter's weights).
    """
    import torch

    opt = torch.optim.AdamW(params, lr=learning_rate, betas=betas, weight_decay=weight_decay, eps=1e-8)

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        frac = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(examples), generator=gen).tolist()
        batch, order = order[:batch_size], order[batch_size:]
        seqs = [examples[i] for i in batch]
        width = max(len(p) + len(a) for p, a in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, (p, a) in enumerate(seqs):
            n = len(p) + len(a)
            ids[row, :n] = torch.tensor(p + a)
            labels[row, len(p):n] = torch.tensor(a)
            mask[row, :n] = 1
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
        if progress is not None:
            progress.set_postfix_str(f"{name} loss {losses[-1]:.2f}", refresh=False)
            progress.update(1)
    return losses, time.perf_counter() - t0, time.process_time() - c0
