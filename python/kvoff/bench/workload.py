"""A multi-turn serving workload: conversations that share system prompts and grow each turn.

Every request's prompt is the conversation so far (system prompt, earlier turns and their
answers) plus a new user message, so later turns and other conversations with the same system
prompt hit blocks that earlier requests stored in the CPU tier.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WorkloadConfig:
    num_system_prompts: int = 4
    system_prompt_tokens: int = 1024
    num_conversations: int = 32
    max_turns: int = 6
    user_tokens: tuple[int, int] = (64, 512)
    output_tokens: tuple[int, int] = (32, 256)
    # Conversations active at once: more of them means longer reuse distance, so a small CPU
    # tier sees evictions before a conversation's next turn comes back.
    concurrency: int = 16


@dataclass(frozen=True)
class Request:
    req_id: str
    prompt: np.ndarray  # int32 token ids
    output: np.ndarray  # the tokens the simulated model will "generate"

    @property
    def num_tokens(self) -> int:
        """Prompt plus output: the KV the request holds when it finishes."""
        return len(self.prompt) + len(self.output)


def block_hashes(tokens: np.ndarray, block_size: int) -> list[bytes]:
    """Prefix-chained hashes of the full blocks of ``tokens``: each block's hash covers every
    token before it, so equal hashes mean equal prefixes."""
    out: list[bytes] = []
    parent = b""
    for start in range(0, len(tokens) - len(tokens) % block_size, block_size):
        h = hashlib.blake2b(parent, digest_size=16)
        h.update(tokens[start : start + block_size].tobytes())
        parent = h.digest()
        out.append(parent)
    return out


def generate(cfg: WorkloadConfig, num_requests: int | None, seed: int) -> Iterator[Request]:
    """Requests in arrival order; endless when ``num_requests`` is None."""
    rng = np.random.default_rng(seed)
    systems = [
        rng.integers(0, 128_000, cfg.system_prompt_tokens, dtype=np.int32)
        for _ in range(cfg.num_system_prompts)
    ]
    active: list[tuple[int, np.ndarray, int]] = []  # (conversation id, history, turns done)
    next_conv = 0
    produced = 0
    while num_requests is None or produced < num_requests:
        while len(active) < cfg.concurrency:
            sys_prompt = systems[int(rng.integers(0, len(systems)))]
            active.append((next_conv, sys_prompt.copy(), 0))
            next_conv += 1
        slot = int(rng.integers(0, len(active)))
        conv, history, turns = active[slot]
        user = rng.integers(0, 128_000, int(rng.integers(*cfg.user_tokens)), dtype=np.int32)
        prompt = np.concatenate([history, user])
        # The answer is drawn here: the bench only needs it to be the same tokens when the
        # conversation comes back with it in its history.
        answer = rng.integers(0, 128_000, int(rng.integers(*cfg.output_tokens)), dtype=np.int32)
        yield Request(f"conv{conv}-turn{turns}", prompt, answer)
        produced += 1
        if turns + 1 >= cfg.max_turns:
            active.pop(slot)
        else:
            active[slot] = (conv, np.concatenate([prompt, answer]), turns + 1)
