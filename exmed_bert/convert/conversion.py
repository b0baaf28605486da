"""Conversion: patient records -> per-split encoded datasets, vocab.json, manifest and rejects.

One streaming pass: validate each record, encode chunks with provisional token ids, count codes of
the training split, then build the vocabulary and remap ids with a numpy lookup when writing. The input is
an opened `formats` source, read piece by piece in this process or in workers (`workers`): nothing here
depends on its format. `run(ConvertArgs)` is the stage; `convert(args)` the conversion it runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from exmed_bert.convert import formats
from exmed_bert.convert.args import ConvertArgs
from exmed_bert.convert.intake import Intake, Job
from exmed_bert.convert.labels import TaskTable, cut_rule, read_task_csv, write_rejects
from exmed_bert.convert.report import all_rejected_message, code_report, summary_line
from exmed_bert.convert.speed import gc_paused
from exmed_bert.convert.spill import Spill, spill_folder
from exmed_bert.convert.validate import RecordParser
from exmed_bert.convert.value_bins import SAMPLE_PER_CODE
from exmed_bert.convert.workers import convert_in_workers, plan_workers
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


def _lookup(parser: RecordParser, vocab: Vocab) -> np.ndarray:
    lut = np.full(len(parser.tokens), UNK_ID, dtype=np.int32)
    lut[:FIRST_CODE_ID] = np.arange(FIRST_CODE_ID)
    for i in range(FIRST_CODE_ID, len(parser.tokens)):
        lut[i] = vocab.id(parser.tokens[i])
    return lut


def run(args: ConvertArgs) -> dict:
    """The conversion stage: datasets, vocab.json, manifest and rejects, run_config beside them; returns
    the manifest."""
    manifest = convert(args)
    out = Path(args.output)
    write_run_info(out.parent, args, extra={"data_fingerprint": manifest["input_fingerprint"]},
                   name=f"{out.stem}_run_config.json")
    print(summary_line(manifest, output_paths(args.output)))
    return manifest


def convert_patients(input: str | os.PathLike, output: str | os.PathLike, *,
                     task_data: str | os.PathLike | TaskTable | None = None, progress: bool = True,
                     fast: bool = True, **settings) -> dict:
    """`convert` with the settings as keywords (ConvertArgs' fields, e.g. max_length=64, workers=2): for
    scripts, examples and tests. `task_data` may be the accepted rows of a task file (a `TaskTable`)."""
    table = task_data if isinstance(task_data, TaskTable) else None
    task = str(table.path if table is not None else task_data) if task_data is not None else None
    args = ConvertArgs(input=str(input), output=str(output), task_data=task, **settings)
    return convert(args, table=table, progress=progress, fast=fast)


def convert(args: ConvertArgs, *, table: TaskTable | None = None, vocab: Vocab | None = None,
            progress: bool = True, fast: bool = True) -> dict:
    """Convert and write everything; returns the manifest. See docs/DATASET.md for the file layout.

    `table`: the accepted rows of args.task_data when the caller has read them already (else they are read
    here; any bad row stops the conversion). `vocab`: a task-only build with this fixed vocabulary
    (task_datasets.build_task_datasets): only the task datasets are written. fast=False sends every record
    through the per-record path, in this process (the reference; same outputs)."""
    args.validate()
    fmt = formats.detect(args.input)
    if args.value_bins and not fmt.reads_values:
        raise UserError(f"{args.input}: --value-bins reads MEDS numeric_value; it needs MEDS input (a JSON event "
                        "can name its bin in the code, e.g. 'LAB//50912//mg/dL|q3')")
    pretraining = vocab is None
    paths = output_paths(args.output, task=not pretraining)
    if table is None and args.task_data is not None:
        table = read_task_csv(args.task_data, on_error=args.on_task_error,
                              skip_hint="pass --on-task-error skip to skip bad rows into task_rejected.csv")
    if not pretraining and table is None:
        raise ValueError("a task-only build needs task data")
    paths["rejected"].parent.mkdir(parents=True, exist_ok=True)
    # token arrays wait on disk, next to the output, until their split is written (exmed_bert.convert.spill)
    # the input is hashed for the manifest while it is converted (exmed_bert.io.fingerprint_meanwhile)
    with spill_folder(paths["rejected"].parent) as tmp, fingerprint_meanwhile(args.input) as fingerprint:
        spills = [Spill(tmp, name) for name in ("pretrain", "task")]
        try:
            source = fmt(Path(args.input), args, times=table is not None and table.timed)
            job, bins = _plan(args, source, table, pretraining, str(tmp))
            return _convert(job, table, vocab, bins, paths, spills, fingerprint, progress, fast)
        finally:
            for s in spills:
                s.close()


def _plan(args: ConvertArgs, source, table: TaskTable | None, pretraining: bool,
          spill_dir: str) -> tuple[Job, dict | None]:
    """Everything the pass is built from (`intake.Job`: subject splits, labels), after --value-bins edges
    are learned; and the manifest's value_bins entry."""
    splits = source.subject_splits() if args.split_source != "hash" else None
    if splits is None and args.split_source == "meds":
        raise UserError(f"{args.input}: --split-source meds needs metadata/subject_splits.parquet in the MEDS "
                        "dataset root; use --split-source hash to assign splits by patient-id hash")
    bins = None
    if args.value_bins:   # first pass: quantile edges from train subjects only (exmed_bert.convert.value_bins)
        def is_train(pid: str) -> bool:
            return (splits.split_of(pid) if splits is not None else
                    split_index(pid, args.seed, args.train_ratio)) == 0

        bins = {"bins": args.value_bins, "codes_binned": source.learn_value_bins(is_train, args.value_bins, args.seed),
                "edges_from": "train", "sample_per_code": SAMPLE_PER_CODE}
    # labels with prediction times keep the events of the prediction day before the time where events carry
    # their times (MEDS); JSON events have dates only, so that day is left out for them
    timed = table is not None and table.timed
    job = Job(args, source, pretraining, labels=table.by_patient() if table is not None else None,
              splits=splits, timed=timed and source.event_times, label_times=timed, spill_dir=spill_dir)
    return job, bins


def _convert(job: Job, table: TaskTable | None, vocab: Vocab | None, bins: dict | None, paths: dict, spills,
             input_fingerprint, progress: bool, fast: bool) -> dict:
    args, source = job.args, job.source
    task_paths = output_paths(args.output, task=True)
    wanted = SPLITS if args.split == "all" else (args.split,)
    # Everything a later stage reads together is committed as one set (exmed_bert.io.output_set), the
    # rejects file included; a run that rejects every record reports beside a conversion already there
    with output_set() as stage:
        rejects = stage(paths["rejected"])
        with gc_paused(), atomic_write(rejects) as rej, \
                tqdm(desc="converting", unit=" patients", disable=None if progress else True, file=sys.stderr) as bar:
            run = job.start(spills, rej)
            n_workers, pieces = plan_workers(source, args.workers) if fast else (1, None)
            if n_workers > 1:
                convert_in_workers(run, job, pieces, n_workers, bar)
            elif fast:
                source.feed_all(run, bar)
            else:
                for obj in source.records():
                    run.record(obj)
                    bar.update()
            if run.n_records == 0:
                raise UserError(source.no_patients())
        parser, pre, task, labels = run.parser, run.pre, run.task, run.labels
        if not run.seen:
            raise UserError(_report_all_rejected(args, paths, rejects, run, source, input_fingerprint()))
        for fam in (pre, task):
            if fam is not None:
                fam.flush()

        if vocab is None:
            counts = pre.train_counts
            vocab = Vocab.from_counts({parser.tokens[i]: int(counts[i]) for i in range(FIRST_CODE_ID, len(counts))
                                       if counts[i] > 0}, min_count=args.min_code_count)
            vocab.save(stage(paths["vocab"]))
        lut = _lookup(parser, vocab)
        manifest: dict = {"input": args.input, "input_fingerprint": input_fingerprint(),
                          "args": dataclasses.asdict(args), "records": run.n_records,
                          "rejected": sum(run.reasons.values()), "reject_reasons": dict(run.reasons),
                          "rejected_file": paths["rejected"].name, "vocab_size": len(vocab), "splits": {}}
        manifest["split_source"] = "meds" if job.splits is not None else "hash"
        if run.split_subjects:   # records count subjects: a subject in several shards is one, read from its first
            manifest["subjects_in_several_files"] = len(run.split_subjects)
        manifest.update(code_report(source, parser))
        if bins is not None:
            manifest["value_bins"] = bins
        if job.splits is not None:
            manifest.update(job.splits.report(run.n_unsplit))
        fingerprint = vocab.fingerprint()
        todo = [(pre, s, paths[name], manifest["splits"], name) for s, name in enumerate(SPLITS)
                if pre is not None and name in wanted]
        if task is not None:
            manifest["task"] = {"task_data": str(table.path), "task_fingerprint": table.fingerprint,
                                "unlabelled_patients": run.n_unlabelled,
                                "label_rows": label_rows(table, labels, run, task.no_events), "splits": {}}
            if table.label_column is not None:  # MEDS labels: which value column, and categories -> class ids
                manifest["task"]["label_column"] = table.label_column
            if (rule := cut_rule(table, source.event_times)) is not None:   # what the task split was cut by
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
    if table is not None and table.rejected:   # the bad task rows, as fine-tuning and the baselines list them
        write_rejects(table, paths["manifest"].parent)
    return manifest


def label_rows(table: TaskTable, labels: dict, run: Intake, no_history: int) -> dict:
    """Every row of the task file as exactly one of: kept with history; kept with no event before its time
    ([CLS] only); its subject not in the data (absent, or rejected); its subject in no split; a bad row
    (by reason). `read` is their sum: the rows of the file."""
    in_data = run.seen - run.unsplit
    rows = {"kept": 0, "not_in_data": 0, "in_no_split": 0}
    for pid, samples in labels.items():
        where = "kept" if pid in in_data else "in_no_split" if pid in run.unsplit else "not_in_data"
        rows[where] += len(samples)
    out = {"read": len(table.rows) + len(table.rejected), "kept": rows["kept"] - no_history,
           "kept_without_history": no_history, "subject_not_in_data": rows["not_in_data"],
           "subject_in_no_split": rows["in_no_split"], "bad": len(table.rejected)}
    out["bad_reasons"] = dict(table.kinds.most_common())
    return out


def _report_all_rejected(args: ConvertArgs, paths: dict, rejects: Path, run: Intake, source,
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
    write_json(where["manifest"], {"input": args.input, "input_fingerprint": fingerprint,
                                   "args": dataclasses.asdict(args),
                                   "records": run.n_records, "rejected": run.n_records,
                                   "reject_reasons": dict(run.reasons), "rejected_file": where["rejected"].name,
                                   "all_rejected": True, "vocab_size": 0, "splits": {},
                                   **code_report(source, run.parser)})
    return all_rejected_message(args.input, run, source, where, kept_conversion=kept)


def _holds_conversion(manifest: Path) -> bool:
    """A manifest of a conversion that wrote datasets (not the report of an all-rejected run)."""
    try:
        return not json.loads(manifest.read_text(encoding="utf-8")).get("all_rejected", False)
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError):
        return True   # unreadable: keep it rather than guess
