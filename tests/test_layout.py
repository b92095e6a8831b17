"""The ("runs", "envs") device mesh: layout choice, env-split checks, and sharded runs on 4 CPU devices."""

import ast
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AbstractMesh, AxisType

from jaxrl_po import GRPOConfig, GRPOOptions, PPOConfig, runner
from jaxrl_po.config import ConfigError
from jaxrl_po.layout import ENVS, RUNS, Layout, check_layout, choose_layout, shard_envs

from conftest import cli_env


@pytest.mark.parametrize("num_runs, num_devices, expected", [
    (1, 1, (1, 1)),
    (5, 1, (1, 1)),
    (1, 4, (1, 4)),  # one agent spans all 4 devices
    (2, 4, (2, 2)),
    (3, 4, (1, 4)),  # gcd(3, 4) = 1: no padded run, envs split 4 ways
    (6, 8, (2, 4)),
    (4, 4, (4, 1)),
    (6, 4, (4, 1)),  # at least as many runs as devices: whole runs, padded to 8
])
def test_automatic_layout_puts_runs_first(num_runs, num_devices, expected):
    layout = choose_layout(num_runs, num_devices)
    assert layout == Layout(*expected)
    assert layout.padded_runs(num_runs) % layout.runs == 0 and layout.padded_runs(num_runs) >= num_runs


def test_env_shards_fixes_the_env_axis():
    assert choose_layout(1, 4, env_shards=1) == Layout(4, 1)  # 1 real run + 3 padded ones
    assert choose_layout(1, 4, env_shards=1).padded_runs(1) == 4
    assert choose_layout(8, 8, env_shards=2) == Layout(4, 2)
    for bad in (0, 3, -2):
        with pytest.raises(ConfigError, match="env_shards: must be a positive divisor of the device count 4") as err:
            choose_layout(1, 4, env_shards=bad)
        assert err.value.field == "env_shards"


def test_env_batch_that_does_not_split_is_a_config_error():
    check_layout(PPOConfig(num_envs=6), Layout(4, 1))  # no env split: anything goes
    check_layout(PPOConfig(num_envs=8), Layout(1, 4))
    with pytest.raises(ConfigError, match=r"num_envs = 6 cannot be split evenly over the 4 devices") as err:
        check_layout(PPOConfig(num_envs=6), Layout(1, 4))
    assert err.value.field == "num_envs" and "multiple of 4" in str(err.value)
    # GRPO: whole groups per device. 24 envs = 3 groups of 8 cannot; 32 = 4 groups can.
    grpo = GRPOConfig(num_envs=24, num_minibatches=1, grpo=GRPOOptions(group_size=8))
    with pytest.raises(ConfigError, match=r"num_envs = 24 is 3 groups of 8, .* whole groups over the 4 devices") as err:
        check_layout(grpo, Layout(1, 4))
    assert err.value.field == "num_envs"
    check_layout(grpo.replace(num_envs=32), Layout(1, 4))


@pytest.mark.parametrize("shared, per_device_fits", [(False, True), (True, False)])
def test_check_fits_counts_every_cpu_device_against_the_one_host_ram(monkeypatch, shared, per_device_fits):
    """8 runs on 2 devices: 4 runs' buffers must fit one accelerator, but 8 runs' must fit a CPU host's RAM."""
    config = PPOConfig(num_envs=64, num_steps=32)
    four_runs = 4 * (runner.rollout_buffer_bytes(config) + runner.training_state_bytes(config))
    monkeypatch.setattr(runner, "device_memory_bytes", lambda: (four_runs + 1, "test memory", shared))
    monkeypatch.setattr(runner.jax, "local_device_count", lambda: 2)
    if per_device_fits:
        runner.check_fits(config, 8, Layout(2, 1), num_seeds=8)
        return
    with pytest.raises(ConfigError, match=r"will not fit: 4 run\(s\) on each of 2 devices need") as err:
        runner.check_fits(config, 8, Layout(2, 1), num_seeds=8)
    assert err.value.field == "num_seeds" and "test memory" in str(err.value)  # one run would fit
    with pytest.raises(ConfigError) as err:  # 8 swept configs of one seed each: fewer swept values
        runner.check_fits(config, 8, Layout(2, 1), num_seeds=1)
    assert err.value.field == "sweep"
    with pytest.raises(ConfigError) as err:  # 4 swept configs of 2 seeds: the sweep makes most runs
        runner.check_fits(config, 8, Layout(2, 1), num_seeds=2)
    assert err.value.field == "sweep"  # was num_seeds whenever there was more than one seed
    with pytest.raises(ConfigError) as err:  # 2 swept configs of 4 seeds (a tie would name the seeds)
        runner.check_fits(config, 8, Layout(2, 1), num_seeds=4)
    assert err.value.field == "num_seeds"
    runner.check_fits(config, 4, Layout(2, 1), num_seeds=4)  # 2 runs per device, 4 in the host's RAM


@pytest.mark.parametrize("hidden_sizes, field", [((64, 64), "num_envs"), ((4096, 4096), "hidden_sizes")])
def test_check_fits_counts_parameters_and_names_what_makes_one_run_too_big(monkeypatch, hidden_sizes, field):
    """One run that cannot fit names the bigger of its buffers and its parameters with Adam's moments
    (3 float32 copies of each of the actor's and critic's 4x4096 + 4096x4096 + 4096x2 (or 1) weights)."""
    config = PPOConfig(num_envs=64, num_steps=32, hidden_sizes=hidden_sizes)
    params = 2 * (4 * 4096 + 4096 + 4096 * 4096 + 4096) + 4096 * 2 + 2 + 4096 + 1
    if hidden_sizes == (4096, 4096):
        assert runner.training_state_bytes(config) == 3 * 4 * params
    monkeypatch.setattr(runner, "device_memory_bytes", lambda: (runner.rollout_buffer_bytes(config) // 2, "tiny", False))
    with pytest.raises(ConfigError, match=r"will not fit: 1 run\(s\) per device need") as err:
        runner.check_fits(config, 1, Layout(1, 1), num_seeds=1)
    assert err.value.field == field


def _abstract_mesh(runs: int, envs: int) -> AbstractMesh:
    return AbstractMesh((runs, envs), (RUNS, ENVS), axis_types=(AxisType.Auto, AxisType.Auto))


def _constraints(fun, *args) -> list:
    """The sharding specs of every sharding_constraint in ``vmap(fun, spmd_axis_name="runs")``'s jaxpr."""
    jaxpr = jax.make_jaxpr(jax.vmap(fun, spmd_axis_name=RUNS))(*args)
    return [tuple(eqn.params["sharding"].spec) for eqn in jaxpr.eqns if eqn.primitive.name == "sharding_constraint"]


def test_shard_envs_marks_the_env_axis_and_vmap_adds_the_run_axis():
    x = jnp.ones((2, 3, 8))  # [runs, T, B]
    fun = lambda x: shard_envs({"a": x, "b": x + 1}, axis=1)
    with jax.sharding.use_abstract_mesh(_abstract_mesh(2, 4)):
        assert _constraints(fun, x) == [(RUNS, None, ENVS)] * 2
    # No mesh, or an env axis of one device: no constraint at all (single-device programs are unchanged).
    assert _constraints(fun, x) == []
    with jax.sharding.use_abstract_mesh(_abstract_mesh(4, 1)):
        assert _constraints(fun, x) == []


FOUR_DEVICES = textwrap.dedent("""
    import jax, numpy as np
    from jaxrl_po import GRPOConfig, GRPOOptions, PPOConfig, make_train
    from jaxrl_po.layout import ENVS, RUNS, choose_layout, make_mesh, put_runs, run_sharding
    from jaxrl_po.sweep import make_runs
    assert jax.device_count() == 4

    def sharded(config, runs):
        layout = choose_layout(len(runs.seeds), 4)
        mesh = make_mesh(layout)
        args = put_runs((runs.keys, runs.hparams), run_sharding(mesh), layout.padded_runs(len(runs.seeds)))
        with jax.set_mesh(mesh):
            compiled = jax.jit(jax.vmap(make_train(config), spmd_axis_name=RUNS)).lower(*args).compile()
        return layout, compiled, compiled(*args)

    def check(name, config, field, env_leaf):
        runs = make_runs(config, [0, 1])
        single = jax.jit(jax.vmap(make_train(config)))(runs.keys, runs.hparams)  # one device, no mesh
        for n, shape in ((1, (1, 4)), (2, (2, 2))):
            layout, compiled, out = sharded(config, runs._replace(keys=runs.keys[:n], seeds=runs.seeds[:n]))
            assert tuple(layout) == shape, layout
            # The work really is split: XLA inserted cross-device sums (a replicated program has none),
            # and PPO's carried env batch (GRPO carries none between updates) lies on "envs".
            assert "all-reduce" in compiled.as_text()
            if env_leaf is not None:
                assert ENVS in env_leaf(out.state).sharding.spec, env_leaf(out.state).sharding
            got = jax.tree_util.tree_map(lambda x: np.asarray(x)[:n], out.metrics)
            want = jax.tree_util.tree_map(lambda x: np.asarray(x)[:n], single.metrics)
            # Same episodes exactly; float sums over the batch are added up in another order.
            np.testing.assert_array_equal(got.episode_return, want.episode_return)
            np.testing.assert_array_equal(got.env_steps, want.env_steps)
            for f in field:
                np.testing.assert_allclose(getattr(got, f), getattr(want, f), rtol=1e-5, atol=1e-6, err_msg=f)
            for a, b in zip(jax.tree_util.tree_leaves(out.state.params), jax.tree_util.tree_leaves(single.state.params)):
                np.testing.assert_allclose(np.asarray(a)[:n], np.asarray(b)[:n], rtol=1e-5, atol=1e-6)
            print(name, shape, "ok")

    ppo = PPOConfig(num_envs=8, num_steps=16, num_minibatches=2, update_epochs=2,
                    total_timesteps=8 * 16 * 6, hidden_sizes=(16,))
    check("ppo", ppo, ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm"), lambda s: s.env.obs)
    # 16 envs = 4 groups of 4 (one whole group per device); oversample 2: the widest 4 of 8 groups are
    # kept, so kept groups move between devices.
    grpo = GRPOConfig(num_envs=16, num_minibatches=2, update_epochs=2, total_timesteps=16 * 2 * 20,
                      hidden_sizes=(16,), grpo=GRPOOptions(group_size=4, horizon=20, chunk_size=10, oversample=2))
    check("grpo", grpo, ("policy_loss", "kl_ref", "entropy", "approx_kl", "grad_norm", "zero_spread_frac"),
          None)
""")


def test_env_batch_sharded_over_four_cpu_devices_matches_one_device():
    proc = subprocess.run([sys.executable, "-c", FOUR_DEVICES], env=cli_env(cpu_devices=4), capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split() == ["ppo", "(1,", "4)", "ok", "ppo", "(2,", "2)", "ok",
                                   "grpo", "(1,", "4)", "ok", "grpo", "(2,", "2)", "ok"], proc.stdout


OUT_OF_MEMORY = textwrap.dedent("""
    import contextlib, io, os, sys
    import jax, jax.numpy as jnp
    from jaxrl_po import runner, train

    real_compile_job = runner.compile_job
    oom = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 31.27GiB with allocator GPU_0_bfc on device 0."

    def exhausted():  # XLA's real error, found only when the result is waited for: a 4 TiB temporary
        huge = lambda a: jax.lax.fori_loop(0, 2, lambda i, x: jnp.roll(x, 1) * a, jnp.full((2**39,), a))[:4]
        return jax.jit(huge)(1.0)

    def compiling(*args, **kwargs):  # XLA's GPU autotuner runs kernels while compiling
        raise jax.errors.JaxRuntimeError("NOT_FOUND: All configs failed during profiling. " + oom)

    def starting(*args, **kwargs):  # init's state depends on a failed allocation
        init, segment, compile_s = real_compile_job(*args, **kwargs)
        def failing_init(*a):
            state = init(*a)
            return state._replace(update=state.update + (exhausted()[0] * 0).astype(state.update.dtype))
        return failing_init, segment, compile_s

    class FailingSegment:  # the compiled segment, but its metric rows hold a failed allocation
        def __init__(self, segment):
            self.segment, self.out_info = segment, segment.out_info
        def __call__(self, *args):
            state, rows = self.segment(*args)
            return state, rows._replace(env_steps=exhausted())

    def running(*args, **kwargs):
        init, segment, compile_s = real_compile_job(*args, **kwargs)
        return init, FailingSegment(segment), compile_s

    def raising(message):
        def compile_job(*args, **kwargs):
            raise jax.errors.JaxRuntimeError(message)
        return compile_job

    tiny = ["--num-envs", "8", "--num-steps", "8", "--num-minibatches", "2", "--total-timesteps", "640",
            "--no-progress", "--no-compile-cache"]
    for name, stand_in, flags in (
            ("compiling", compiling, ["--num-seeds", "1"]), ("starting", starting, ["--num-seeds", "1"]),
            ("running", running, ["--num-seeds", "1"]), ("seeds", compiling, ["--num-seeds", "3"]),
            ("sweep", compiling, ["--num-seeds", "1", "--sweep", "lr=1e-3,3e-4,1e-4"]),
            ("other", raising("INTERNAL: not a memory error"), ["--num-seeds", "1"]),
            ("limit", raising("RESOURCE_EXHAUSTED: Received message larger than max"), ["--num-seeds", "1"]),
            ("shared", raising("RESOURCE_EXHAUSTED: Shared memory size limit exceeded: requested 131072, "
                               "available: 101376"), ["--num-seeds", "1"])):
        runner.compile_job = stand_in
        run_dir = os.path.join(sys.argv[1], name)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                code = train.main([*tiny, *flags, "--run-dir", run_dir])
        except jax.errors.JaxRuntimeError as error:
            code = "raised " + str(error)
        kept = sorted(os.listdir(run_dir)) if os.path.exists(run_dir) else None
        print("RESULT", repr((name, code, err.getvalue(), kept)))
""")


@pytest.mark.parametrize("message, words", [
    ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2.00GiB.", "Out of memory while trying to allocate 2.00GiB."),
    ("INTERNAL: Failed to allocate request for 1.00GiB (1073741824B) on device ordinal 0",
     "Failed to allocate request for 1.00GiB (1073741824B) on device ordinal 0"),
    ("INTERNAL: Failed to load in-memory CUBIN: CUDA_ERROR_OUT_OF_MEMORY\nmore", "CUDA_ERROR_OUT_OF_MEMORY"),
    ("RESOURCE_EXHAUSTED: Received message larger than max (4 vs. 2)", None),
    ("INTERNAL: not a memory error", None),
])
def test_out_of_memory_text_finds_xla_and_cuda_words(message, words):
    assert runner.out_of_memory_text(jax.errors.JaxRuntimeError(message)) == words
    assert runner.out_of_memory_text(RuntimeError(message)) is None  # only XLA's runtime errors


def test_running_out_of_device_memory_is_one_line_naming_what_to_make_smaller(tmp_path):
    """XLA's temporaries come on top of what check_fits counts, so a run can still run out of device memory (on a
    GPU, while compiling: the autotuner runs kernels). That is one line with XLA's own words, naming --num-envs,
    or what sets the runs when a device holds several (--num-seeds, or --sweep with one seed), exit code 2; no run
    directory is left behind before training, and what a run wrote is kept. XLA reports a failed allocation when
    the result is waited for, which the stand-ins for init and the segment do. Other XLA errors, RESOURCE_EXHAUSTED
    ones that are not about memory included, are not dressed up as memory errors."""
    proc = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY, str(tmp_path)], env=cli_env(cpu_devices=1),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line.removeprefix("RESULT ") for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    results = {r[0]: r[1:] for r in map(ast.literal_eval, lines)}
    gpu_words = "(XLA: Out of memory while trying to allocate 31.27GiB with allocator GPU_0_bfc on device 0.)"
    cpu_words = "(XLA: Out of memory allocating 4398046511168 bytes.)"
    for name, field, runs, words in (("compiling", "--num-envs", 1, gpu_words), ("starting", "--num-envs", 1, cpu_words),
                                     ("running", "--num-envs", 1, cpu_words), ("seeds", "--num-seeds", 3, gpu_words),
                                     ("sweep", "--sweep", 3, gpu_words)):
        code, err, kept = results[name]
        assert code == 2 and err.count("\n") == 1, (name, err)
        assert err.startswith(f"error: {field}: out of device memory: {runs} run(s) per device need more than the "
                              f"host RAM (cpu)'s "), (name, err)
        assert err.rstrip().endswith(f"once XLA's temporaries are counted {words}; use fewer envs, steps, seeds or swept values, "
                                     f"or a smaller network"), (name, err)
        assert "Traceback" not in proc.stderr
    for name in ("compiling", "starting", "seeds", "sweep"):
        assert results[name][2] is None, name  # nothing was written, so no directory is left
    assert {"config.json", "metrics.csv"} <= set(results["running"][2])
    assert results["other"][0] == "raised INTERNAL: not a memory error"
    assert results["limit"][0] == "raised RESOURCE_EXHAUSTED: Received message larger than max"
    assert results["shared"][0].startswith("raised RESOURCE_EXHAUSTED: Shared memory size limit exceeded")
