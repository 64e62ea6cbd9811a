"""The benchmark's own arithmetic and data: the parameter count and floor of an epoch, the
shaped synthetic datasets, and variants run in their own process (the timings themselves are not
tests)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import dataset_dir

from benchmarks.speed import floors, profile_step
from benchmarks.speed.bench_train import (
    BenchSpec,
    RemoteVariant,
    Workload,
    make_variant,
)
from benchmarks.speed.shapes import Shape, shaped_synthetic
from convae_jax import config as config_lib
from convae_jax.model import build_model, init_params


def test_parameter_count_matches_the_jax_model():
    config = config_lib.testing().override(["model.hidden=(24,)", "model.conv_channels=3", "model.decoder_channels=5"])
    model = build_model(config.model, n_cols=17, n_channels=4)
    params = init_params(model, jax.random.key(0))
    want = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    assert floors.parameter_count(n_cols=17, n_channels=4, conv_channels=3, hidden=24, decoder_channels=5) == want


def test_epoch_floor_by_hand():
    # 10 rows, n = 4, C = 2, d = 3, k = k' = 1, batch 5 (2 steps); P = 2 + 12 + 3 + 12 + 4 + 2 + 8 = 43.
    floor = floors.epoch_floor(rows=10, steps=2, batch_rows=5, n_cols=4, n_channels=2, conv_channels=1, hidden=3,
                               decoder_channels=1, matmul_flops=100.0, bandwidth=1000.0)
    assert floor.parameters == 43
    assert floor.gemm_flop == 6 * 10 * 3 * 4 * 1
    assert floor.pass_bytes == 2 * (32 * 43 + 4 * 5 * 4 * 2)
    np.testing.assert_allclose(floor.seconds, 720 / 100 + floor.pass_bytes / 1000)


def test_shaped_synthetic_has_the_shape():
    shape = Shape("tiny", n_users=300, n_items=200, n_interactions=12_000, n_channels=5)
    data = shaped_synthetic(shape, seed=1)
    pairs = data.user.astype(np.int64) * shape.n_items + data.item
    assert np.unique(pairs).size == data.nnz  # one rating per (user, item), as in MovieLens
    assert np.bincount(data.user, minlength=shape.n_users).min() >= 20
    assert 0.85 * shape.n_interactions <= data.nnz <= 1.05 * shape.n_interactions
    assert set(np.unique(data.channel)) == set(range(shape.n_channels))
    np.testing.assert_array_equal(shaped_synthetic(shape, seed=1).item, data.item)  # seeded


def test_step_profile_sums_device_ops_per_stream():
    """profile_step reads a Chrome-format trace: GPU kernels summed per (stream, op), host events
    and metadata left out."""
    meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
            {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "Stream #7"}},
            {"ph": "M", "name": "thread_name", "pid": 2, "tid": 3, "args": {"name": "python"}}]
    events = [{"ph": "X", "pid": 1, "tid": 7, "name": "gemm", "dur": 5.0},
              {"ph": "X", "pid": 1, "tid": 7, "name": "gemm", "dur": 3.0},
              {"ph": "X", "pid": 1, "tid": 7, "name": "loop_add_fusion", "dur": 1.5},
              {"ph": "X", "pid": 2, "tid": 3, "name": "PjitFunction(step)", "dur": 40.0}]
    totals = profile_step.op_times({"traceEvents": meta + events}, device="gpu")
    assert totals == {("Stream #7", "gemm"): 8.0, ("Stream #7", "loop_add_fusion"): 1.5}


def test_a_variant_in_its_own_process_trains_exactly_as_in_this_one():
    """Same spec, same data, batches, weights and dropout stream: the remote epoch's loss and the
    trained weights are those of the in-process variant; a failure there comes back as an error."""
    spec = BenchSpec(shape="ml-100k", batch_rows=128, variants=("jax-fp32",), hidden=16, max_steps=2,
                     infer_users=64, data_dir=str(dataset_dir("ml-100k").parent))
    local, remote = make_variant("jax-fp32", Workload(spec)), RemoteVariant(spec, "jax-fp32")
    try:
        local.warm_up(), remote.warm_up()
        local_loss, remote_loss = local.epoch()[1], remote.epoch()[1]
        np.testing.assert_allclose(remote_loss, local_loss, rtol=1e-6)
        np.testing.assert_allclose(remote.params()["decoder_kernel"], local.params()["decoder_kernel"], rtol=1e-6)
        np.testing.assert_array_equal(remote.infer(local.params())[2], local.infer(local.params())[2])
    finally:
        remote.close()
    with pytest.raises(RuntimeError, match="building torch-fast failed in its process"):
        RemoteVariant(BenchSpec(shape="no-such-shape", batch_rows=8, variants=("torch-fast",)), "torch-fast")


def test_step_profile_names_each_op_with_its_source_line():
    """An optimised module's instructions map to their JAX op path, the backward pass's under
    `transpose(…)`, and to the line that traced them; trace events map kernel names to their
    instructions."""
    import inspect

    import jax
    import jax.numpy as jnp

    def loss(x):
        return jnp.sum(jnp.sin(x) ** 2)

    line = inspect.getsourcelines(loss)[1] + 1
    text = jax.jit(jax.grad(loss)).lower(jnp.ones(8)).compile().as_text()
    sources = profile_step.instruction_sources(text)
    op_paths = [s.split(" @ ")[0] for s in sources.values() if f" @ test_bench.py:{line} " in s]
    assert "jvp()/sin" in op_paths
    assert "transpose(jvp())/mul" in op_paths  # the cotangent times cos x, made by autodiff's transpose
    assert not {"transpose(jvp())/sin", "transpose(jvp())/cos"} & set(op_paths)  # both linearised forward
    events = [{"ph": "X", "name": "gemm_kernel", "args": {"hlo_op": "custom-call.1"}},
              {"ph": "X", "name": "gemm_kernel", "args": {"hlo_op": "custom-call.2"}},
              {"ph": "X", "name": "loop_add_fusion", "args": {"hlo_op": "loop_add_fusion"}},
              {"ph": "X", "name": "host", "args": {}}]
    assert profile_step.op_instructions({"traceEvents": events}) == {
        "gemm_kernel": {"custom-call.1", "custom-call.2"}, "loop_add_fusion": {"loop_add_fusion"}}


def test_step_profile_names_gpu_fusion_kernels_by_their_instruction():
    """A GPU module writes other metadata between op_name and stack_frame_id, and a fusion's kernel
    `loop_add_fusion_3` is the instruction `loop_add_fusion.3`; kernels whose events name
    instructions keep those."""
    text = "\n".join([  # noqa: FLY002 (the HLO text, one line an element)
        "HloModule jit_step", "",
        ('  %loop_add_fusion.3 = f32[8]{0} fusion(%p), kind=kLoop, calls=%fused_add, metadata={op_name="jit(step)/'
        'transpose(jvp(Conv4Rec.encode))/add" deduplicated_name="loop_add_fusion.2" scheduling_name="loop_add_fusion.3" '
        'stack_frame_id=1}, backend_config={"operation_queue_id":"0"}'),
        ('  %custom-call.1 = (f32[8]{0}, s8[4]{0}) custom-call(%a, %b), custom_call_target="__cublas$lt$matmul", '
        'metadata={op_name="jit(step)/bd,xd->bx/dot_general" scheduling_name="custom-call.1" stack_frame_id=1}'), "",
        "FileNames", '1 "model.py"', "", "FunctionNames", '1 "Conv4Rec.encode"', "",
        "FileLocations", "1 {file_name_id=1 function_name_id=1 line=42 end_line=42 column=4 end_column=9}", "",
        "StackFrames", "1 {file_location_id=1 parent_frame_id=1}", ""])
    sources = profile_step.instruction_sources(text)
    assert sources["loop_add_fusion.3"] == "transpose(jvp(Conv4Rec.encode))/add @ model.py:42 Conv4Rec.encode"
    events = [{"ph": "X", "name": "nvjet_gemm", "args": {"hlo_op": "custom-call.1"}}]
    named = profile_step.op_sources({"traceEvents": events}, sources)
    assert named["loop_add_fusion_3"] == sources["loop_add_fusion.3"]
    assert named["nvjet_gemm"] == "bd,xd->bx/dot_general @ model.py:42 Conv4Rec.encode"


def test_op_forms_compute_the_same_numbers():
    """Every alternative form that `benchmarks.speed.op_forms` times computes its group's first form."""
    import jax

    from benchmarks.speed import op_forms

    keys = jax.random.split(jax.random.key(0), 4)
    g, w = jax.random.normal(keys[0], (40, 5, 24)), jax.random.normal(keys[1], (40, 8, 24))
    rows = (op_forms.time_forms("dm", op_forms.dm_forms(), (g, w), reps=1)
            + op_forms.time_forms("mix", op_forms.mix_forms(), (jax.random.normal(keys[2], (5, 8)), w), reps=1)
            + op_forms.time_forms("bias", op_forms.bias_forms(), (jax.random.normal(keys[3], (16, 200)),), reps=1))
    assert {r["group"] for r in rows} == {"dm", "mix", "bias"} and len(rows) == 10
    assert max(r["max_rel_diff"] for r in rows) < 1e-5
