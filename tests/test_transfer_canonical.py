"""The canonical layout (vLLM's ``CanonicalKVCaches``: one 2-D ``[num_blocks, page_bytes]``
tensor per page, each with its own block stride): exact round trips, padding left alone, and
the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _transfer_kv import DEVICES, TRITON_WARNING, random_tensor
from kvoff.errors import InvalidArgumentError
from kvoff.transfer import CpuGpuTransfer

pytestmark = pytest.mark.filterwarnings(TRITON_WARNING)

BS = 16


def _flash_attention_pages(device: str, layers: int, blocks: int) -> list[torch.Tensor]:
    """What vLLM hands an offloading worker for FlashAttention: each layer's
    ``[2, num_blocks, block_size, heads, dim]`` bf16 cache split into its K and V halves, each
    an int8 ``[num_blocks, page]`` view (the halves are ``num_blocks`` pages apart)."""
    pages = []
    for i in range(layers):
        t = random_tensor((2, blocks, BS, 2, 8), torch.bfloat16, seed=i).to(device)
        pages.extend(t[kv].view(torch.int8).view(blocks, -1) for kv in (0, 1))
    return pages


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("copier", ["auto", "torch"])
def test_flash_attention_pages_round_trip_exactly(device: str, copier: str) -> None:
    nb, ratio = 20, 4
    pages = _flash_attention_pages(device, layers=3, blocks=nb)
    t = CpuGpuTransfer(pages, BS, BS * ratio, 6, layout="canonical", copier=copier)
    assert t.layout == "canonical" and t.gpu_block_bytes == 6 * BS * 2 * 8 * 2
    original = [torch.cat([p[b].cpu() for p in pages]).view(torch.uint8) for b in range(nb)]
    src = [17, 3, 9, 0, 12, 5, 6, 1]
    t.transfer_async(1, "GPU_to_CPU", src, [4, 1])
    assert t.wait([1])[0].success
    for k, b in enumerate(src):
        j, s = divmod(k, ratio)
        cpu = t.cpu_block([4, 1][j])
        assert torch.equal(cpu[s * t.gpu_block_bytes : (s + 1) * t.gpu_block_bytes], original[b])
    # Load back into other blocks, skipping the first slot of CPU block 4.
    dest = [2, 19, 11, 7, 8, 14, 13]
    for p in pages:
        p[dest] = 0
    t.transfer_async(2, "CPU_to_GPU", dest, [4, 1])
    (res,) = t.wait([2])
    assert res.success and res.transfer_size == 7 * t.gpu_block_bytes
    for b, want in zip(dest, src[1:], strict=True):
        got = torch.cat([p[b].cpu() for p in pages]).view(torch.uint8)
        assert torch.equal(got, original[want])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("copier", ["auto", "torch"])
def test_each_page_has_its_own_size_and_stride_and_padding_is_left_alone(
    device: str, copier: str
) -> None:
    nb = 10
    # Pages of 40, 24 and 56 bytes in rows of 64, 24 (no padding) and 72 bytes.
    wide = [random_tensor((nb, w), torch.int8, seed=w).to(device) for w in (64, 24, 72)]
    pages = [wide[0][:, :40], wide[1], wide[2][:, :56]]
    t = CpuGpuTransfer(pages, BS, BS, 8, layout="canonical", copier=copier)
    assert t.gpu_block_bytes == 40 + 24 + 56
    before = [w.clone() for w in wide]
    t.transfer_async(1, "GPU_to_CPU", [9, 4, 0], [5, 6, 7])
    assert t.wait([1])[0].success
    assert torch.equal(
        t.cpu_block(6).cpu(),
        torch.cat([before[0][4, :40], before[1][4], before[2][4, :56]]).cpu().view(torch.uint8),
    )
    t.transfer_async(2, "CPU_to_GPU", [1, 2, 3], [5, 6, 7])
    assert t.wait([2])[0].success
    for w, b, page in zip(wide, before, (40, 24, 56), strict=True):
        assert torch.equal(w[[1, 2, 3], :page], b[[9, 4, 0], :page])
        assert torch.equal(w[:, page:], b[:, page:])  # the padding of every row is untouched
        untouched = [i for i in range(nb) if i not in (1, 2, 3)]
        assert torch.equal(w[untouched], b[untouched])


def test_a_single_page_tensor_and_a_mapping_are_accepted() -> None:
    page = random_tensor((6, 32), torch.int8, seed=1)
    t = CpuGpuTransfer(page, BS, BS, 2, layout="canonical")
    assert (t.layout, t.gpu_block_bytes) == ("canonical", 32)
    named = {"k": random_tensor((6, 16), torch.int8, seed=2), "v": page}
    t = CpuGpuTransfer(named, BS, BS, 2, layout="canonical")
    t.transfer_async(1, "GPU_to_CPU", [5], [1])
    t.wait([1])
    assert torch.equal(t.cpu_block(1), torch.cat([named["k"][5], page[5]]).view(torch.uint8))


@pytest.mark.parametrize(
    ("gpu_kv", "message"),
    [
        (
            [torch.zeros(4, 16, dtype=torch.int8), torch.zeros(4, 2, 8, dtype=torch.int8)],
            r"layout 'canonical' takes 2-D \[num_blocks, page_bytes\] tensors; gpu_kv\[1\] "
            r"has shape \(4, 2, 8\)",
        ),
        (
            [torch.zeros(4, 16, dtype=torch.int8), torch.zeros(5, 16, dtype=torch.int8)],
            "all layers must have the same number of blocks: region 1 has 5, region 0 has 4",
        ),
        ([torch.zeros(4, 16, dtype=torch.int8).t()], "a block's elements must be contiguous"),
    ],
)
def test_malformed_canonical_caches_are_refused(gpu_kv: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        CpuGpuTransfer(gpu_kv, BS, BS, 2, layout="canonical")


def test_canonical_ids_follow_the_usual_rules() -> None:
    pages = [random_tensor((8, 16), torch.int8, seed=s) for s in (1, 2)]
    t = CpuGpuTransfer(pages, BS, BS * 2, 4, layout="canonical")
    with pytest.raises(InvalidArgumentError, match="needs 4 GPU block ids, got 3"):
        t.transfer_async(1, "GPU_to_CPU", np.arange(3), [0, 1])
    assert list(t.in_flight()) == []
