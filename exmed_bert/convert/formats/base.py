"""`Source`: what every input format is to the conversion. The pass, the workers and the task-dataset build
talk to an opened input only through these methods, so none of them asks which format it has.

A format is one `Source` subclass: `claims(path)` says whether a path is its, the constructor opens it, and
the input is read as *pieces* (a JSONL block, a MEDS shard) in order. `feed(run, piece)` pushes a piece's
patients into a pass (`Intake.block` for columnar blocks, `Intake.record` for patient dicts); the same call
runs in the main process and in worker processes, which is all `--workers` needs. An opened source is sent
to each worker once (pickled), so it holds only what a worker must rebuild.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import ClassVar, Iterable, Iterator

from exmed_bert.convert.args import ConvertArgs


class Source:
    """An opened input. Subclasses implement `claims`, `pieces`, `feed` and `records`; the rest has
    defaults that fit a format without code families, subject splits or values."""

    # its events carry a time of day: labels with prediction times keep the prediction day's events before
    # the time (else that whole day is left out of the task split)
    event_times: ClassVar[bool] = False
    # it has numeric values that --value-bins can bin
    reads_values: ClassVar[bool] = False
    # a subject's rows may lie in several files (MEDS allows a subject in more than one shard): a later file's
    # rows of a subject already read are counted (`Intake.split_subjects`), not rejected as a duplicate record
    subjects_span_files: ClassVar[bool] = False
    # cores one process converting it already keeps busy (a read-ahead thread): workers pay off only above
    busy_cores: ClassVar[int] = 1

    def __init__(self, path: Path, args: ConvertArgs, times: bool = False):
        """Open `path` (errors for a missing or unreadable input are UserErrors). `times`: the labels have
        prediction times, so events should carry theirs (where the format has them: `event_times`)."""
        self.path, self.input = path, args.input   # the input as given names it in messages

    @staticmethod
    def claims(path: Path) -> bool:
        """Whether `path` is an input of this format (formats are asked in `formats.FORMATS` order)."""
        raise NotImplementedError

    @staticmethod
    def made(manifest: dict) -> bool:
        """Whether a conversion's manifest is of an input of this format (asked where `event_times`)."""
        return False

    # -- reading ----------------------------------------------------------------------------------------
    def size(self) -> int:
        """Bytes to convert, for the --workers default; 0 = the input is one piece (never in workers)."""
        return 0

    def pieces(self, workers: int) -> Iterable:
        """The pieces in input order, for `workers` processes (1: the main process alone). `len()` gives
        how many there are (an estimate where they are cut while reading), so no more workers start."""
        raise NotImplementedError

    def feed(self, run, piece) -> None:
        """One piece's patients through the pass `run` (an `Intake`), in input order."""
        raise NotImplementedError

    def feed_all(self, run, bar) -> None:
        """The whole input through `run` in this process; `bar` counts patients."""
        for piece in self.pieces(1):
            before = run.n_records
            self.feed(run, piece)
            bar.update(run.n_records - before)

    def records(self) -> Iterator[dict]:
        """Every patient as a dict of the guide's JSON schema: the per-record reference path (fast=False)."""
        raise NotImplementedError

    def no_patients(self) -> str:
        """The error of an input without a single patient."""
        return f"{self.input}: no patients in the input"

    # -- what only some formats have ------------------------------------------------------------------
    def subject_splits(self):
        """The input's own split of its patients (an object with `split_of(patient_id) -> split index or
        -1` and `report(n_left_out) -> manifest entries`, picklable), or None: the seeded id hash."""
        return None

    def learn_value_bins(self, is_train, bins: int, seed: int) -> int:
        """Learn --value-bins edges from train patients (`is_train(patient_id)`); returns codes binned.
        Only asked of a format that `reads_values`."""
        raise NotImplementedError

    # -- counts for the manifest ----------------------------------------------------------------------
    @property
    def ignored(self) -> Counter:
        """Rows or events the format read past, per code family (the manifest's ignored_codes)."""
        return Counter()

    def tally(self):
        """The counts a worker sends back after each piece (then reset in the worker), or None."""
        return None

    def add_tally(self, tally) -> None:
        """Add a worker's `tally()` to this (the main process's) source."""

    def report(self) -> dict:
        """The format's own entries of the manifest's code report, after ignored_codes."""
        return {}

    def rejected_hint(self) -> str:
        """More for the message of a run that rejected every record (e.g. the largest ignored families)."""
        return ""
