"""The suite's fast-compile XLA flags: XLA aborts a process on a flag it does not know, so conftest keeps only
those this jaxlib knows (found by a probe in a subprocess, then passed to pytest-xdist's workers)."""

from __future__ import annotations

import pytest

import conftest


@pytest.fixture
def with_made_up_flag(monkeypatch):
    """conftest's flags plus one no XLA knows; no saved answer in the environment."""
    monkeypatch.setattr(conftest, "FAST_COMPILE", {**conftest.FAST_COMPILE, "xla_jaxrl_po_made_up": True})
    monkeypatch.delenv(conftest.KNOWN_FLAGS_VARIABLE, raising=False)
    return list(conftest.FAST_COMPILE)


def test_a_flag_xla_does_not_know_is_dropped_and_the_answer_saved(with_made_up_flag):
    known = conftest._known_xla_flags(with_made_up_flag)
    assert known == with_made_up_flag[:-1]
    saved = conftest.os.environ[conftest.KNOWN_FLAGS_VARIABLE]
    assert saved.endswith(":" + ",".join(known)) and conftest.sys.executable in saved
    # Read back, not probed again (the made-up flag would be dropped either way; a saved answer keeps it).
    conftest.os.environ[conftest.KNOWN_FLAGS_VARIABLE] = saved.rsplit(":", 1)[0] + ":" + ",".join(with_made_up_flag)
    assert conftest._known_xla_flags(with_made_up_flag) == with_made_up_flag


def test_an_answer_saved_for_another_jaxlib_is_probed_again(with_made_up_flag, monkeypatch):
    monkeypatch.setenv(conftest.KNOWN_FLAGS_VARIABLE, "/other/python jaxlib 0.4.0:" + ",".join(with_made_up_flag))
    assert conftest._known_xla_flags(with_made_up_flag) == with_made_up_flag[:-1]


def test_any_other_failure_of_the_probe_stops_with_its_output(with_made_up_flag, monkeypatch, tmp_path):
    (tmp_path / "jax.py").write_text("raise SystemExit('this jax is broken')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="this jax is broken"):
        conftest._known_xla_flags(with_made_up_flag)
