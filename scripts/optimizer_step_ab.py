"""A/B of the fine-tuning step's optimizer update on this CPU: PyTorch's default AdamW (a loop over the tensors)
against the fused kernel that `tools/training/finetune.py` uses. The network is the classifier's (MiniLM-L6 with
773 leaves, 2 level heads and 52 tags: the example data's shape); every round runs the same random batches with
each optimizer in turn, so a noisy hour shows as spread, not as a difference.

    .venv/bin/python scripts/optimizer_step_ab.py --rounds 2 --steps 20 --tokens 16

Prints one JSON line per round and optimizer: milliseconds a step for forward, backward, clipping and the update."""

from __future__ import annotations

import argparse
import json
import time

from training import artifact, serving


def timed_steps(fused: bool, steps: int, tokens: int, batch: int) -> dict[str, float]:
    import torch
    from torch.nn import functional as F

    torch.manual_seed(0)
    net = serving.network().build(artifact.encoder_dir(), 773, [72, 221], 52)
    net.train()
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=fused)
    spent = {"forward": 0.0, "backward": 0.0, "clip": 0.0, "update": 0.0}
    for i in range(steps + 3):  # the first 3 warm up
        ids = torch.randint(1000, 30000, (batch, tokens))
        y = torch.randint(0, 773, (batch,))
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(ids, torch.ones_like(ids))[0], y)
        t1 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if i >= 3:
            for k, dt in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                spent[k] += dt
    return {f"{k}_ms": round(v / steps * 1000, 1) for k, v in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=16, help="tokens a title (the example data's batches: ~10-20)")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    for r in range(args.rounds):
        for fused in (False, True):
            ms = timed_steps(fused, args.steps, args.tokens, args.batch)
            ms["step_ms"] = round(sum(ms.values()), 1)
            print(json.dumps({"round": r + 1, "optimizer": "fused" if fused else "per-tensor loop", **ms}), flush=True)


if __name__ == "__main__":
    main()
