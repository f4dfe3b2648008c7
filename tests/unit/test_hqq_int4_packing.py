"""hqq's int4 kernels must get packed weights on torch 2.10+ (its version test reads "2.11" as 2.1).

Without the packing, `_convert_weight_to_int4pack` fails on the GPU and Pruna silently serves HQQ's slow
dequantize path instead (seen on the H100: "Expected in.dtype() == at::kByte", 104 tokens/s). The CUDA
kernel does not run here; what it is given does: the same bytes hqq produces on the torch it was written for.
"""

import pytest
import torch

hqq_torchao = pytest.importorskip("hqq.backends.torchao")

from shared import llm_backends  # noqa: E402


def _converted(version, monkeypatch):
    monkeypatch.setattr(torch, "__version__", version)
    layer = hqq_torchao.HQQLinearTorchWeightOnlynt4.__new__(hqq_torchao.HQQLinearTorchWeightOnlynt4)
    layer.compute_dtype, layer.device = torch.bfloat16, "cpu"
    g = torch.Generator().manual_seed(0)
    quants = torch.randint(0, 16, (8, 64), generator=g).to(torch.uint8)  # 4x128 weight, groups of 64
    scales = torch.rand(8, 1, generator=g) + 0.5
    zeros = torch.rand(8, 1, generator=g) * 15
    return layer.hqq_quants_to_torch_quants(quants, scales, zeros, (4, 128))


@pytest.fixture
def patched(monkeypatch):
    layer = hqq_torchao.HQQLinearTorchWeightOnlynt4
    monkeypatch.setattr(layer, "hqq_quants_to_torch_quants", layer.hqq_quants_to_torch_quants)
    llm_backends.pack_hqq_int4_on_any_torch()
    llm_backends.pack_hqq_int4_on_any_torch()  # idempotent: a second Pruna smash in the process


def test_torch_2_11_gets_the_bytes_hqq_packs_for_torch_2_5(patched, monkeypatch):
    intended = _converted("2.5.1", monkeypatch)
    weight, scales, zeros = _converted("2.11.0+cu130", monkeypatch)
    assert weight.dtype == torch.uint8 and weight.shape == (4, 64)
    assert torch.equal(weight, intended[0])
    assert torch.equal(scales, intended[1]) and torch.equal(zeros, intended[2])


def test_unpatched_hqq_leaves_torch_2_11_weights_unpacked(monkeypatch):
    # What failed on the GPU: this is what reached `_convert_weight_to_int4pack`.
    weight, _, _ = _converted("2.11.0+cu130", monkeypatch)
    assert weight.dtype == torch.int32 and weight.shape == (4, 128)
