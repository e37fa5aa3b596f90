"""A decode step captured as a CUDA graph: one launch per token instead of ~15 per layer.

At batch 1 a 7B decode step reads 15 GB of weights; an H100 or H200 does that in 3-5 ms, while
launching its ~1,500 kernels one by one from Python takes far longer. A graph replays them all at
once. A step is captured for a cache's tensors, rows, padding and NTK alpha (a cache does not grow
while an answer decodes); its column and token are copied into the graph's own inputs, so the next
answers into the same cache replay it too.
"""

from __future__ import annotations

import torch

from .llm import KVCache, QwenAudioLM

# Capturing costs a few eager steps, so shorter answers decode eagerly.
MIN_STEPS = 16
# Captured steps kept per cache (a conversation's next turns reuse them; rows, alpha or padding may differ).
KEEP = 4


def graphed_step(model: QwenAudioLM, cache: KVCache, pos: int, *, batch: int, pad: torch.Tensor | None,
                 alpha: list[float] | None) -> "GraphedStep":
    """The step captured for this cache, rows, NTK alpha and padding: made once, then replayed by every
    answer that writes into the same cache tensors (the engine hands a conversation's cache to its next turn)."""
    key = (batch, tuple(alpha or ()), None if pad is None else tuple(pad.tolist()))
    step = cache.steps.pop(key, None)
    if step is None:
        step = GraphedStep(model, cache, pos, batch=batch, pad=pad, alpha=alpha)
    cache.steps[key] = step  # most recently used last
    while len(cache.steps) > KEEP:
        cache.steps.pop(next(iter(cache.steps)))
    return step


class GraphedStep:
    """`step(token [B], pos) -> logits [B, V]` (float32), as `model(token[:, None], pos, cache, ...)[:, -1]`.

    The logits are the graph's own output buffer: read them before the next call.
    """

    def __init__(self, model: QwenAudioLM, cache: KVCache, pos: int, *, batch: int, pad: torch.Tensor | None,
                 alpha: list[float] | None):
        device = model.device
        self.token = torch.zeros(batch, dtype=torch.long, device=device)
        self.pos = torch.full((1,), pos, dtype=torch.long, device=device)

        def step() -> torch.Tensor:
            return model(self.token[:, None], self.pos, cache, pad=pad, alpha=alpha)[:, -1]

        # Warm up on a side stream, as capture wants (cuBLAS workspaces, the allocator). It writes keys and
        # values only at column `pos`, which the first real step writes again before anything reads it.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (a server's, a batch pool's) may use the GPU while this one captures.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.logits = step()

    def __call__(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        self.token.copy_(token)
        self.pos.fill_(pos)
        self.graph.replay()
        return self.logits
