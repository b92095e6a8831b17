"""What the benchmark scripts share on their command lines: one-line errors, path flags, the checks of the
files they will write, and which saved entries a run may keep. Every check runs before any work, so a refusal
costs nothing (README, "Tests": a bad input exits 2 with one line)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

from jaxrl_po.config import ConfigError
from jaxrl_po.logs import NOT_RESULTS, named, replace_refusal, saved_entries, write_json
from jaxrl_po.train import user_path


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's errors: ``error: --flag: message`` on one line and exit code 2, no usage lines
    (``--help`` shows them); the script's docstring is its help, as written."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message.removeprefix('argument ')}\n")  # argparse's own: "argument --x: ..."


def path_argument(text: str) -> str:
    """A path flag's value as the CLI takes one (``train.user_path``): ``~`` expanded, and an empty value refused,
    not read as "the default path" (an unset shell variable is a mistake)."""
    try:
        return user_path("", text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.message) from None


def check_directory(parser: argparse.ArgumentParser, flag: str, path: Path, directory: Path) -> None:
    """Refuse ``path`` when ``directory``, which it is written in, could not be made or written: it, or the
    nearest of its parents that exists, is not a directory or not writable. A missing directory is made when
    the first result is written (:func:`save_results`), so a refused or failed run leaves nothing behind."""
    existing = next((d for d in (directory, *directory.parents) if d.exists()), None)
    if existing is not None and not existing.is_dir():
        parser.error(f"{flag}: cannot write {path}: {existing} is not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):  # results are written by rename
        parser.error(f"{flag}: cannot write {path}: {existing} is not writable (permission denied)")


def check_json_out(parser: argparse.ArgumentParser, out: Path, written: bool = True) -> None:
    """``--out``: a ``.json`` file that can be written (``written``; else only read, as results to plot). The plot
    or table a script writes beside it takes its name with another suffix, which then can never be the JSON itself
    (``--out x.png`` was both, and lost it)."""
    if out.is_dir():
        parser.error(f"--out: {out} is a directory; name a .json file in it")
    if out.suffix.lower() != ".json":
        parser.error(f"--out: must name a .json file, got {out}")
    check_directory(parser, "--out", out, out.parent)
    if written and out.exists() and not os.access(out, os.W_OK):  # a rename would replace it: read-only means keep it
        parser.error(f"--out: {out} is read-only; make it writable or name another file")


def check_companion(parser: argparse.ArgumentParser, path: Path, what: str, redrawn: bool, overwrite: bool) -> None:
    """Refuse to replace ``path``, the ``what`` (plot, table) a run writes beside ``--out``, when it is there and
    may be the user's: it is replaced unasked only when ``redrawn`` (the run adds to the results at ``--out``,
    whose plot or table it is), else only with ``--overwrite``. A directory there cannot be replaced at all."""
    if path.is_dir():
        parser.error(f"--out: {path}, where this run writes its {what}, is a directory")
    if path.exists() and not (redrawn or overwrite):
        parser.error(replace_refusal("--out", path, f"a file this run would replace with its {what}"))


def kept_entries(record: dict | None, quick: bool, key: str, fields: Sequence[str]) -> list[dict]:
    """The entries of the saved ``record`` (``record[key]``) that a run may keep beside its own: none from a run of
    the other kind, quick or full (a file holds one or the other: smoke-run rows must not pass for full ones),
    nor from a file that is not such a record."""
    same_kind = record is not None and record.get("quick") == quick
    return saved_entries(record, key, fields) if same_kind else []


def replaced_held(record: dict | None, quick: bool, kept: list[dict], replaced: list[str], noun: str) -> str | None:
    """What a run would replace at ``--out``, for ``replace_refusal``: the ``replaced`` entries of ``kept`` (named
    as ``noun``s), or the whole ``record`` when none of it can be kept; None when the run only adds entries."""
    if record is None or (kept and not replaced):
        return None
    if replaced:
        return named(noun, replaced)
    if isinstance(record.get("quick"), bool) and record["quick"] != quick:
        return f"a {'quick' if record['quick'] else 'full'} run"
    return NOT_RESULTS


def save_results(path: Path, data: Any) -> None:
    """Write a benchmark's results, making the directory ``--out`` names if it is missing (checked before any work
    by :func:`check_directory`). Atomic: the results already there (other rows, earlier runs) stay whole until the
    new file is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data, allow_nan=True)
