"""jaxrl_po.threefry: the unrolled CPU lowering gives JAX's Threefry-2x32 bits exactly."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32

import jaxrl_po  # noqa: F401  (importing the package installs the lowering)
from jaxrl_po import threefry
from jaxrl_po.threefry import MEASURED_BELOW, jax_version, threefry2x32

# Known-answer tests for Threefry-2x32 with 20 rounds, from the Random123 distribution (kat_vectors):
# (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("key, count, expected", KNOWN_ANSWERS)
def test_known_answers(key, count, expected):
    direct = threefry2x32(*(jnp.uint32(v) for v in key + count))
    assert [int(v) for v in direct] == list(expected)
    # The same through jax's primitive, which now lowers through jaxrl_po.threefry on CPU.
    through_jax = jax.jit(threefry_2x32)(jnp.uint32(key), jnp.uint32(count))
    assert [int(v) for v in np.asarray(through_jax)] == list(expected)


SPLIT_HLO = "import jax; print(jax.jit(lambda k: jax.random.split(k, 5)).lower(jax.random.key(0)).compile().as_text())"


def test_cpu_lowering_has_no_loop_where_installed():
    """JAX itself lowered the hash on CPU to a 5-iteration while loop; the installed lowering has none. From jax
    0.11 on it is not installed, and the program is plain JAX's."""
    here = {}
    exec(SPLIT_HLO.replace("print(", "hlo = ("), here)
    plain = subprocess.run([sys.executable, "-c", SPLIT_HLO], capture_output=True, text=True, check=True).stdout
    if jax_version() < MEASURED_BELOW:
        assert "while" in plain and "while" not in here["hlo"]
    else:
        assert ("while" in plain) == ("while" in here["hlo"])


@pytest.mark.parametrize("version, installed", [((0, 10, 2), True), ((0, 11, 0), False), ((0, 11, 2), False)])
def test_lowering_is_installed_only_on_the_jax_it_was_measured_on(monkeypatch, version, installed):
    """With jax 0.11.2, XLA's CPU compiler did not finish compiling the trainer with this lowering (README)."""
    registered = []
    monkeypatch.setattr(threefry, "jax_version", lambda: version)
    monkeypatch.setattr(threefry.mlir, "register_lowering", lambda *args, **kwargs: registered.append(kwargs))
    threefry.install()
    assert registered == ([{"platform": "cpu"}] if installed else [])


def test_random_bits_are_those_of_plain_jax():
    """Splits, draws and fold-ins give the bits that a process without jaxrl_po gets."""
    program = (
        "import jax\n"
        "k = jax.random.key(42)\n"
        "print(jax.random.bits(k, (9,)).tolist())\n"
        "print(jax.random.key_data(jax.random.split(k, 3)).tolist())\n"
        "print(jax.random.uniform(jax.random.fold_in(k, 7), (3,)).tolist())\n"
        "print(jax.random.categorical(k, jax.numpy.zeros((5, 4))).tolist())\n"
    )
    plain = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout
    here = {}
    exec(program.replace("print(", "out.append("), {"out": (lines := [])}, here)
    assert "\n".join(str(line) for line in lines) + "\n" == plain
