"""benchmarks.step_profile: kernel families, the per-step summary, and the profiling window of StepProfiler."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from benchmarks.step_profile import OTHER, TRITON, Profile, StepProfiler, family, kernels_from, summarize

# Kernel names as the H100 profiles of 2026-11-27 printed them.
CASES = {
    "nvjet_sm90_tst_256x160_64x4_1x2_h_bz_coopA_TNT": "matrix products",
    "void kDequantizeBlockwise<__half, 512, 64, 8, 2>(float*, unsigned char*, float*, __half*, int, int)": "bitsandbytes",
    "triton_tem_fused_flex_attention_0": "attention",
    "triton_tem_fused__to_copy_add_flex_attention_backward_mul_transpose_view_3": "attention",
    "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x64_4x1x1_cga1x1x1_kernel0_0": "attention",
    "triton_poi_fused__unsafe_view_add_mul_3": "Triton",
    "_swiglu_backward_kernel": "Triton",
    "void at::native::vectorized_elementwise_kernel<8, at::native::bfloat16_copy_kernel_cuda(at::TensorIteratorBase&)>": "dtype casts",
    "void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)>": "dtype casts",
    "Memcpy DtoD (Device -> Device)": "dtype casts",
    "void at::native::unrolled_elementwise_kernel<at::native::CUDAFunctor_add<float>, std::array<char*, 3>>": "element-wise",
    "void at::native::(anonymous namespace)::fused_dropout_kernel_vec<float, float, unsigned int, 1, 4, bool>": "element-wise",
    "ncclDevKernel_AllReduce_Sum_f32_RING_LL": "NCCL",
    "void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>": "optimiser",
    "somethingElse": OTHER,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_families(name):
    assert CASES[name] in family(name)


def test_aten_copy_kernels_are_not_counted_as_triton():
    # The first version's rule put at::native's dtype-copy kernels among the Triton kernels (they end in
    # "_kernel_cuda"): 80 ms per step of casts looked like Triton work in the NF4 profile.
    copy = "void at::native::vectorized_elementwise_kernel<8, at::native::bfloat16_copy_kernel_cuda(...)>"
    assert family(copy) != TRITON


def test_summary_splits_wall_time_into_families_and_idle():
    kernels = {"nvjet_sm90_a": (0.120, 200), "_rms_norm_forward_kernel": (0.040, 64), "Memcpy DtoD (Device -> Device)": (0.040, 10)}
    text = summarize(Profile(steps=2, wall_s=0.400, kernels=kernels))
    assert "200.0 ms of wall time per step, 100.0 ms of GPU time in kernels per step" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 60.0 | 100 | 30.0% |" in rows["matrix products (cuBLAS / CUTLASS)"]
    assert "| 20.0 | 32 | 10.0% |" in rows[TRITON]
    idle = next(line for line in text.splitlines() if "GPU idle" in line)
    assert "| 100.0 |" in idle and "**50.0%**" in idle  # 400 ms wall - 200 ms kernels, over 2 steps
    # The slowest-kernel table is sorted by time, longest first.
    order = [line for line in text.splitlines() if line.startswith("| `")]
    assert order[0].startswith("| `nvjet_sm90_a`")


def test_user_annotations_are_not_counted_twice():
    evt = lambda key, us, annotation=False: SimpleNamespace(  # noqa: E731
        key=key, count=1, self_device_time_total=us, device_type="DeviceType.CUDA", is_user_annotation=annotation)
    events = [evt("fused_adam_kernel", 500.0), evt("Optimizer.step#AdamW.step", 600.0, annotation=True),
              evt("cpu_only_op", 0.0)]
    assert kernels_from(events, "cuda") == {"fused_adam_kernel": (0.0005, 1)}


def _drive(profiler: StepProfiler, steps: int, work) -> None:
    for step in range(1, steps + 1):
        for _ in range(step):  # step k does k matrix products, so the window shows which steps it covered
            work()
        profiler.on_step_end(None, SimpleNamespace(global_step=step), None)
    profiler.on_train_end(None, SimpleNamespace(global_step=steps), None)


def test_step_profiler_covers_exactly_its_steps():
    profiler = StepProfiler(first=3, count=2, device="cpu")
    x = torch.randn(64, 64)
    _drive(profiler, 6, lambda: x @ x)
    assert profiler.touched_steps == {2, 3, 4}  # start (end of step 2), steps 3 and 4, stop (end of step 4)
    assert profiler.profile is not None and profiler.profile.steps == 2 and profiler.profile.wall_s > 0
    mm = profiler.profile.kernels["aten::mm"]
    assert mm[1] == 3 + 4  # the products of steps 3 and 4, none of the others


def test_step_profiler_without_enough_steps_leaves_no_profile():
    profiler = StepProfiler(first=5, count=2, device="cpu")
    x = torch.randn(8, 8)
    _drive(profiler, 5, lambda: x @ x)  # the window opened at the end of step 4 and never closed
    assert profiler.profile is None and profiler._prof is None and not profiler.error


def test_step_profiler_failure_is_reported_not_raised(monkeypatch):
    import torch.profiler

    class Broken:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            raise RuntimeError("CUPTI unavailable")

    monkeypatch.setattr(torch.profiler, "profile", Broken)
    profiler = StepProfiler(first=2, count=1, device="cpu")
    _drive(profiler, 3, lambda: None)
    assert profiler.profile is None and "CUPTI unavailable" in profiler.error


def test_step_profiler_rejects_a_window_before_step_2():
    with pytest.raises(ValueError):
        StepProfiler(first=1)
