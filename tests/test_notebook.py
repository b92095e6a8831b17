"""notebooks/walkthrough.ipynb runs top to bottom and its key numbers are sane.

The notebook is executed headless with nbclient in a fresh ``python3`` kernel that runs
this interpreter (``sys.executable``), on the CPU, with its outputs (run directories,
plots, GIFs) under ``tmp_path``. It trains several small programs, so it takes a few
minutes on a 2-core CPU; it is marked ``learning`` with the other slow tests.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel the notebook runs in; a missing one must fail, not skip)
import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "walkthrough.ipynb"
CELL_TIMEOUT_S = 300
KERNEL_NAME = "python3"


def _outputs_text(nb) -> str:
    """Every stream and text/plain output of the executed notebook, in order."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "data" in output and "text/plain" in output["data"]:
                parts.append(output["data"]["text/plain"])
    return "\n".join(parts)


def _number_after(label: str, text: str) -> float:
    match = re.search(r"\b" + re.escape(label) + r"[^:\n]*:\s*(-?[\d.]+|nan)", text)
    assert match, f"no {label!r} line in the notebook's outputs:\n{text[-3000:]}"
    return float(match.group(1))


def _private_kernelspec(root: Path) -> Path:
    """A ``python3`` kernelspec that starts this interpreter.

    Directories in JUPYTER_PATH are searched before the user's and the environment's, so
    this spec is the one used even where another ``python3`` spec (a user-wide one pointing
    at a different Python) exists. ipykernel also installs a ``python3`` spec into
    ``sys.prefix/share/jupyter/kernels`` whose ``python`` command jupyter_client maps to
    ``sys.executable``; this just removes any doubt about which one is found first.
    """
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (jaxrl_po tests)",
        "language": "python",
    }))
    return root


def test_notebook_is_stored_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == KERNEL_NAME
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "clear the notebook's outputs before saving"


@pytest.mark.learning
def test_walkthrough_notebook_runs(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("JUPYTER_PATH", str(_private_kernelspec(tmp_path / "jupyter")))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAXRL_PO_NOTEBOOK_OUT", str(out))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"the notebook failed:\n{str(err)[-4000:]}")

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"cell raised: {output.get('ename')}: {output.get('evalue')}"
    text = _outputs_text(nb)
    assert "RuntimeWarning" not in text, "a cell warned (e.g. a mean over updates where no episode finished)"

    # Section 1: four PPO seeds at a quarter of the default budget learn (random play is ~22; here all 500).
    assert _number_after("PPO final return", text) > 400
    # Section 2: GRPO at 10% of its budget is partial but has clearly started to learn (here 150 and 230).
    assert _number_after("GRPO final return", text) > 100
    # Section 3: the sweep's table lists both learning rates, best first, and names the first one best.
    rows = re.findall(r"^\s*(0\.0003|0\.002)\s+(-?[\d.]+)\s+±", text, re.M)
    assert sorted(lr for lr, _ in rows) == ["0.0003", "0.002"], text[-3000:]
    assert float(rows[0][1]) >= float(rows[1][1]), rows
    assert re.search(rf"best lr: {re.escape(rows[0][0])}\b", text)
    # Section 4: the CLI run directory.
    run_dir = out / "ppo-cartpole"
    for name in ("config.json", "metrics.csv", "summary.json", "checkpoints"):
        assert (run_dir / name).exists(), f"{name} missing from {run_dir}"
    # Section 5: the plot was written and shown inline.
    assert (run_dir / "curves.png").stat().st_size > 0
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the learning curves were not displayed"
    # Section 6: evaluation and a GIF (CartPole where pygame is installed, else Breakout-MinAtar).
    # Its two CartPole runs (a quarter of the default budget) both scored 500 greedy here; random play ~22.
    assert _number_after("greedy evaluation return", text) > 400
    gifs = sorted(out.glob("*.gif"))
    assert len(gifs) == 1 and gifs[0].stat().st_size > 0
    assert any("image/gif" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
