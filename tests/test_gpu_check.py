"""benchmarks/gpu_check.py's pieces that can rot without a GPU (the whole check runs in its
--dry mode under `make test`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
gpu_check = pytest.importorskip("gpu_check")

from mai_repro import config  # noqa: E402
from mai_repro.schema import ConfigError  # noqa: E402


def test_notebook_cuts_are_valid_gpu_overrides():
    cfg = config.load("gpu", gpu_check.GPU_CUTS)
    assert cfg.model.attn_impl == "flex" and cfg.pretrain.compile  # the gpu path is kept
    assert cfg.pretrain.steps < config.load("gpu").pretrain.steps
    with pytest.raises(ConfigError):
        config.load("gpu", {**gpu_check.GPU_CUTS, "pretrain.stepz": 1})


@pytest.mark.parametrize("name,group", [
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", "attention"),
    ("triton_tem_fused_flex_attention_0", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),
    ("void cutlass::device_kernel<grouped_mm_kernel>", "grouped GEMM"),
    ("triton_poi_fused_index_put_3", "dispatch/permute"),
    ("void at::native::radixSortKVInPlace<long>", "dispatch/permute"),
    ("void at::native::multi_tensor_apply_kernel<FusedAdamWMathFunctor>", "optimizer"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "dense GEMM"),
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNT", "dense GEMM"),
    ("void cunn_SoftMaxForward<4, float, float, float, LogSoftMaxForwardEpilogue>", "loss"),
    ("triton_red_fused__log_softmax_nll_loss_forward_5", "loss"),
    ("triton_red_fused__to_copy_mul_rsqrt_1", "other"),
])
def test_kernel_groups(name, group):
    assert gpu_check.kernel_group(name) == group


def test_group_profile_shares_add_up():
    rows = [{"name": "flash_fwd", "ms_per_step": 3.0}, {"name": "nvjet_gemm", "ms_per_step": 1.0}]
    assert gpu_check.group_profile(rows) == {"attention": 0.75, "dense GEMM": 0.25}
