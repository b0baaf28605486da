"""Conversion: patient records -> per-split encoded datasets, vocab.json, manifest and rejects.

One streaming pass: validate each record, encode chunks with provisional token ids, count codes of
the training split, then build the vocabulary and remap ids with a numpy lookup when writing.
`run(ConvertArgs)` is the stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from exmed_bert.convert.args import ON_ERROR, SPLIT_SOURCES, ConvertArgs
from exmed_bert.convert.family import Family
from exmed_bert.convert.fastpath import read_table
from exmed_bert.convert.intake import Intake
from exmed_bert.convert.labels import TaskTable, cut_rule, read_task_csv
from exmed_bert.convert.meds import MedsReader
from exmed_bert.convert.feed import feed_jsonl_block, feed_meds_file, meds_split_of
from exmed_bert.convert.records import detect_format, iter_jsonl_blocks, iter_patients
from exmed_bert.convert.report import all_rejected_message, code_report, summary_line
from exmed_bert.convert.spill import Spill, spill_folder
from exmed_bert.convert.validate import OTHER_CODES, RecordParser
from exmed_bert.convert.workers import Job, convert_in_workers, pieces, plan_workers
from exmed_bert.convert.value_bins import SAMPLE_PER_CODE, learn_edges
from exmed_bert.data.splits import SPLITS, split_index
from exmed_bert.data.vocab import FIRST_CODE_ID, UNK_ID, Vocab
from exmed_bert.errors import UserError
from exmed_bert.io import atomic_write, fingerprint_meanwhile, output_set, write_json, write_run_info


def output_paths(output: str | os.PathLike, task: bool = False) -> dict[str, Path]:
    """Where a conversion to `output` (e.g. pretrain_stuff/synthetic.pt) writes each file."""
    output = Path(output)
    folder, stem = output.parent, output.stem if output.suffix == ".pt" else output.name
    tag = f"{stem}_task" if task else stem
    paths = {s: folder / f"{tag}_{s}.pt" for s in SPLITS}
    paths.update(vocab=folder / "vocab.json", rejected=folder / f"{tag}_rejected.jsonl",
                 manifest=folder / ("dataset_manifest.json" if not task else f"{tag}_manifest.json"))
    return paths


def is_meds(input: str | os.PathLike) -> bool:
    """A MEDS input: a dataset root, its data/ folder, or one Parquet file."""
    input = Path(input)
    return input.is_dir() or input.suffix.lower() == ".parquet"


def meds_splitter(reader, split_source: str, input) -> tuple:
    """(split_of or None, the source used, MEDS split counts or None) for a conversion of `input`.

    With metadata/subject_splits.parquet (and split_source auto or meds), MEDS `train` -> train,
    `tuning` -> val, `held_out` -> test; a subject in any other split, or in none, is left out of every
    split (counted in the manifest), so no held-out or unknown subject can reach pretraining."""
    if split_source not in SPLIT_SOURCES:
        raise UserError(f"--split-source must be one of {', '.join(SPLIT_SOURCES)}, got {split_source!r}")
    splits = reader.subject_splits if reader is not None and split_source != "hash" else None
    if splits is None:
        if split_source == "meds":
            raise UserError(f"{input}: --split-source meds needs metadata/subject_splits.parquet in the MEDS "
                            "dataset root; use --split-source hash to assign splits by patient-id hash")
        return None, "hash", None
    return meds_split_of(splits), "meds", dict(sorted(Counter(splits.values()).items()))


def open_records(input: str | os.PathLike, other_codes: str = "drop"):
    """Patient dicts from a JSON/JSONL file or a MEDS folder, plus the MEDS reader (or None)."""
    input = Path(input)
    if is_meds(input):
        reader = MedsReader(input, other_codes=other_codes)
        return iter(reader), reader
    if not input.exists():
        raise UserError(f"{input}: input not found; generate it with scripts/generate_synthetic_patients.py")
    return iter_patients(input), None


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic GC: the pass creates millions of acyclic containers and keeps a chunk of them
    alive, which makes every collection rescan them (about 2x slower overall)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _lookup(parser: RecordParser, vocab: Vocab) -> np.ndarray:
    lut = np.full(len(parser.tokens), UNK_ID, dtype=np.int32)
    lut[:FIRST_CODE_ID] = np.arange(FIRST_CODE_ID)
    for i in range(FIRST_CODE_ID, len(parser.tokens)):
        lut[i] = vocab.id(parser.tokens[i])
    return lut


def convert_patients(input: str | os.PathLike, output: str | os.PathLike, *, split: str = "all",
                     max_length: int = 512, train_ratio: float = 0.8, seed: int = 42, min_code_count: int = 1,
                     task_data: str | os.PathLike | TaskTable | None = None, on_error: str = "skip",
                     vocab: Vocab | None = None, pretraining: bool = True, args: dict | None = None,
                     progress: bool = True, fast: bool = True, split_source: str = "auto",
                     other_codes: str = "drop", value_bins: int = 0, workers: int | None = None) -> dict:
    """Convert and write everything; returns the manifest. See docs/DATASET.md for the file layout.

    fast=False sends every JSONL record through the per-record path (the reference; same outputs).
    other_codes: "drop" (count codes of no known system per family) or "keep" (tokens "other:...", type 4).
    value_bins: N > 1 bins a MEDS other code's numeric_value into N train-split quantile bins (needs keep).
    workers: processes converting MEDS shards or JSONL blocks (exmed_bert.convert.workers); None = every CPU
    for inputs of 16 MB or more, else 1 (this process). The output is the same for any number.

    pretraining=False with a fixed `vocab` builds only the task datasets (build_task_datasets).
    `task_data` is a task CSV (any bad row stops the conversion) or the accepted rows of one (`TaskTable`).
    """
    if on_error not in ON_ERROR:
        raise UserError(f"--on-error must be skip or fail, got {on_error!r}")
    if other_codes not in OTHER_CODES:
        raise UserError(f"--other-codes must be one of {', '.join(OTHER_CODES)}, got {other_codes!r}")
    if value_bins < 0 or value_bins == 1:
        raise UserError(f"--value-bins must be 0 (off) or at least 2, got {value_bins}")
    if value_bins and other_codes != "keep":
        raise UserError(f"--value-bins {value_bins} bins the values of other codes; add --other-codes keep "
                        "(or leave --value-bins at 0)")
    if value_bins and not is_meds(input):
        raise UserError(f"{input}: --value-bins reads MEDS numeric_value; it needs MEDS input (a JSON event "
                        "can name its bin in the code, e.g. 'LAB//50912//mg/dL|q3')")
    paths = output_paths(output, task=not pretraining)
    task_paths = output_paths(output, task=True)
    table = read_task_csv(task_data, skip_hint=None) if isinstance(task_data, (str, os.PathLike)) else task_data
    if not pretraining and (table is None or vocab is None):
        raise ValueError("a task-only build needs task_data and a vocabulary")
    paths["rejected"].parent.mkdir(parents=True, exist_ok=True)
    # token arrays wait on disk, next to the output, until their split is written (exmed_bert.convert.spill)
    # the input is hashed for the manifest while it is converted (exmed_bert.io.fingerprint_meanwhile)
    with spill_folder(paths["rejected"].parent) as tmp, fingerprint_meanwhile(input) as fingerprint:
        spills = [Spill(tmp, name) for name in ("pretrain", "task")]
        try:
            return _convert(input, paths, task_paths, table, spills, fingerprint, split=split,
                            max_length=max_length, train_ratio=train_ratio, seed=seed, min_code_count=min_code_count,
                            on_error=on_error, vocab=vocab, pretraining=pretraining, args=args, progress=progress,
                            fast=fast, split_source=split_source, other_codes=other_codes,
                            value_bins=value_bins, workers=workers)
        finally:
            for s in spills:
                s.close()


def _convert(input, paths, task_paths, table: TaskTable | None, spills, input_fingerprint, *, split, max_length,
             train_ratio, seed, min_code_count, on_error, vocab, pretraining, args, progress, fast, split_source,
             other_codes, value_bins, workers) -> dict:
    reader = MedsReader(input, other_codes=other_codes) if is_meds(input) else None
    split_of, used_source, meds_split_counts = meds_splitter(reader, split_source, input)
    if value_bins:   # first pass: quantile edges from train subjects only (exmed_bert.convert.value_bins)
        def is_train(pid: str) -> bool:
            return (split_of(pid) if split_of is not None else split_index(pid, seed, train_ratio)) == 0

        reader.value_edges = learn_edges(reader, is_train, value_bins, seed=seed)
    parser = RecordParser(other_codes=other_codes)
    # labels with prediction times (MEDS) keep the events of the prediction day before the time: MEDS events
    # then carry their times (columns.py); JSON events have dates only, so that day is left out for them
    timed = reader is not None and table is not None and table.timed
    if timed:
        reader.event_times = parser.read_times = True
    pre = Family(parser, max_length, task=False, spill=spills[0]) if pretraining else None
    labels = table.by_patient() if table is not None else None  # {patient_id: [(label, day, time), ...]}
    label_times = table is not None and table.timed   # task datasets record each row's prediction time
    task = Family(parser, max_length, task=True, spill=spills[1], label_times=label_times,
                  cut_at_time=timed) if labels is not None else None
    wanted = SPLITS if split == "all" else (split,)

    # Everything a later stage reads together is committed as one set (exmed_bert.io.output_set), the
    # rejects file included; a run that rejects every record reports beside a conversion already there
    with output_set() as stage:
        rejects = stage(paths["rejected"])
        with _gc_paused(), atomic_write(rejects) as rej, \
                tqdm(desc="converting", unit=" patients", disable=None if progress else True, file=sys.stderr) as bar:
            run = Intake(parser, pre, task, labels, seed=seed, train_ratio=train_ratio, on_error=on_error,
                         input=input, rejects=rej, split_of=split_of)
            jsonl = reader is None and fast and Path(input).is_file() and detect_format(Path(input)) == "jsonl"
            n_workers = plan_workers(workers, input, reader, jsonl) if fast else 1
            if n_workers > 1:
                job = Job(input=str(input), other_codes=other_codes, max_length=max_length, seed=seed,
                          train_ratio=train_ratio, pretraining=pretraining, labels=labels,
                          splits=reader.subject_splits if used_source == "meds" else None,
                          value_edges=reader.value_edges if reader is not None else {},
                          batch_rows=MedsReader.batch_rows, spill_dir=str(spills[0].folder), event_times=timed,
                          label_times=label_times)
                convert_in_workers(run, job, pieces(input, reader, n_workers), n_workers, reader, bar)
                if run.n_records == 0 and jsonl:
                    raise UserError(f"{input}: no patients in the file")
                meds = reader
            else:
                meds = _feed(run, input, bar, fast, reader)
            if run.n_records == 0:
                raise UserError(f"{input}: no patients in the input")
        if not run.seen:
            raise UserError(_report_all_rejected(input, paths, rejects, run, meds, parser, args,
                                                 input_fingerprint()))
        n_records, reasons, n_unlabelled, seen = run.n_records, run.reasons, run.n_unlabelled, run.seen
        for fam in (pre, task):
            if fam is not None:
                fam.flush()

        if pretraining:
            counts = pre.train_counts
            vocab = Vocab.from_counts({parser.tokens[i]: int(counts[i]) for i in range(FIRST_CODE_ID, len(counts))
                                       if counts[i] > 0}, min_count=min_code_count)
            vocab.save(stage(paths["vocab"]))
        lut = _lookup(parser, vocab)
        manifest: dict = {"input": str(input), "input_fingerprint": input_fingerprint(), "args": args or {},
                          "records": n_records, "rejected": sum(reasons.values()), "reject_reasons": dict(reasons),
                          "rejected_file": paths["rejected"].name, "vocab_size": len(vocab), "splits": {}}
        manifest["split_source"] = used_source
        manifest.update(code_report(meds, parser))
        if value_bins:
            manifest["value_bins"] = {"bins": value_bins, "codes_binned": len(reader.value_edges),
                                      "edges_from": "train", "sample_per_code": SAMPLE_PER_CODE}
        if meds_split_counts is not None:
            manifest["meds_subject_splits"] = meds_split_counts
            manifest["patients_outside_the_meds_splits"] = run.n_unsplit
        fingerprint = vocab.fingerprint()
        todo = [(pre, s, paths[name], manifest["splits"], name) for s, name in enumerate(SPLITS)
                if pre is not None and name in wanted]
        if task is not None:
            manifest["task"] = {"task_data": str(table.path), "task_fingerprint": table.fingerprint,
                                "unlabelled_patients": n_unlabelled,
                                "labels_without_patient": len(set(labels) - seen),
                                "no_events_before_prediction_date": task.no_events, "splits": {}}
            if table.label_column is not None:  # MEDS labels: which value column, and categories -> class ids
                manifest["task"]["label_column"] = table.label_column
            if (rule := cut_rule(table, meds=reader is not None)) is not None:   # what the task split was cut by
                manifest["task"]["cut"] = rule
            if table.classes is not None:
                manifest["task"]["label_classes"] = {c: i for i, c in enumerate(table.classes)}
            todo += [(task, s, task_paths[name], manifest["task"]["splits"], name) for s, name in enumerate(SPLITS)
                     if name in wanted]
        # the dataset files are written side by side: reading the spill, id lookups, CRCs and writes free the GIL
        with ThreadPoolExecutor(3) as writes:
            jobs = [(entries, name, writes.submit(fam.write, s, path, lut, fingerprint, stage))
                    for fam, s, path, entries, name in todo]
            for entries, name, job in jobs:
                entries[name] = job.result()
        write_json(stage(paths["manifest"]), manifest)
    return manifest


def _report_all_rejected(input, paths: dict, rejects: Path, run: Intake, meds, parser, args,
                         fingerprint: str) -> str:
    """Put the rejects (written to `rejects`, staged) and a manifest where the user finds them, and return
    the error. The usual names, unless the folder holds a conversion: its datasets, vocabulary, manifest
    and rejects are left as they are, and this run's report goes beside them (`*.failed.json[l]`)."""
    kept = _holds_conversion(paths["manifest"])
    where = dict(paths)
    if kept:
        where["manifest"] = paths["manifest"].with_suffix(".failed.json")
        where["rejected"] = paths["rejected"].with_name(f"{paths['rejected'].stem}.failed.jsonl")
    os.replace(rejects, where["rejected"])
    write_json(where["manifest"], {"input": str(input), "input_fingerprint": fingerprint, "args": args or {},
                                   "records": run.n_records, "rejected": run.n_records,
                                   "reject_reasons": dict(run.reasons), "rejected_file": where["rejected"].name,
                                   "all_rejected": True, "vocab_size": 0, "splits": {},
                                   **code_report(meds, parser)})
    return all_rejected_message(input, run, meds, where, kept_conversion=kept)


def _holds_conversion(manifest: Path) -> bool:
    """A manifest of a conversion that wrote datasets (not the report of an all-rejected run)."""
    try:
        return not json.loads(manifest.read_text(encoding="utf-8")).get("all_rejected", False)
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError):
        return True   # unreadable: keep it rather than guess


def _prefetched(blocks):
    """(block, pyarrow table or None) pairs; the next block is parsed in a thread (pyarrow releases the
    GIL) while the caller works on the current one."""
    def parse(block):
        return block, (read_table(block.data, block.line_count()) if block.simple_newlines() else None)

    with ThreadPoolExecutor(1) as pool:
        it = iter(blocks)
        nxt = next(it, None)
        job = pool.submit(parse, nxt) if nxt is not None else None
        while job is not None:
            nxt = next(it, None)
            done = job.result()
            job = pool.submit(parse, nxt) if nxt is not None else None
            yield done


def _feed(run: Intake, input, bar, fast: bool, reader=None):
    """Send every record of `input` (or of the MEDS `reader`) through `run`; returns the reader."""
    path = Path(input)
    if reader is None and fast and path.is_file() and detect_format(path) == "jsonl":
        n = 0
        for block, table in _prefetched(iter_jsonl_blocks(path)):
            before = run.n_records
            feed_jsonl_block(run, path, block, table)
            n += run.n_records - before
            bar.update(run.n_records - before)
        if n == 0:
            raise UserError(f"{path}: no patients in the file")
        return None
    if reader is not None:
        for file in reader.files:
            before = run.n_records
            feed_meds_file(run, reader, file, fast)
            bar.update(run.n_records - before)
        return reader
    records, meds = open_records(input)
    for obj in records:
        run.record(obj)
        bar.update()
    return meds


def run(args: ConvertArgs) -> dict:
    """The conversion stage: datasets, vocab.json, manifest and rejects, run_config beside them; returns
    the manifest."""
    manifest = convert_patients(args.input, args.output, split=args.split, max_length=args.max_length,
                                train_ratio=args.train_ratio, seed=args.seed, min_code_count=args.min_code_count,
                                task_data=args.task_data, on_error=args.on_error, args=dataclasses.asdict(args),
                                split_source=args.split_source, other_codes=args.other_codes,
                                value_bins=args.value_bins, workers=args.workers)
    out = Path(args.output)
    write_run_info(out.parent, args, extra={"data_fingerprint": manifest["input_fingerprint"]},
                   name=f"{out.stem}_run_config.json")
    print(summary_line(manifest, output_paths(args.output)))
    return manifest
