"""Label efficiency (EHRSHOT's protocol): test AUROC against k labelled patients per class, for pretrained
ExMed-BERT (fine-tuned and frozen + logistic regression), the same model trained from scratch, and the
tabular baselines on code counts and on windowed order features.

    python benchmarks/label_efficiency.py --task trajectory --out benchmarks/results/le_trajectory

The generator's --seed drives everything: who is generated, which patients pretrain / validate / test
(the conversion's split hash), the k-subsets and every model's seed. Writes OUT/results.json and
OUT/auroc_vs_k.png (see docs/EVALUATION.md, "Label efficiency").
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from exmed_bert.baselines import registry
from exmed_bert.baselines.args import LogRegArgs, RFArgs, XGBArgs
from exmed_bert.baselines.features import featurize, labels_of, order_pairs
from exmed_bert.convert import ConvertArgs
from exmed_bert.convert import run as convert
from exmed_bert.cli.embed import main as embed
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.data.layout import meds_subject_id
from exmed_bert.errors import UserError, cli_entry
from exmed_bert.evaluation.label_efficiency import (ARMS, ALL, assign_pools, auroc_auprc, canonical_id, draw_subsets,
                                                    finetune_epochs, parse_ks, patients_to_generate, results_doc,
                                                    write_results)
from exmed_bert.io import atomic_write
from exmed_bert.synthetic.args import GenerateArgs
from exmed_bert.synthetic.cohort import run as generate
from exmed_bert.synthetic.generator import CHUNK_SIZE
from exmed_bert.tasks import load_task_splits

TASKS = ("hf", "temporal", "trajectory")
# tabular arm -> (registry baseline, feature set); "windows" arms take the order-aware windowed features
TABULAR = {f"{short}_{fs}": (name, "counts" if fs == "counts" else "windows_order")
           for short, name in (("logreg", "logreg"), ("rf", "rf"), ("xgb", "xgboost")) for fs in ("counts", "windows")}
# the one setting each tabular arm and the probe choose on the validation set
GRIDS = {"logreg": ("C", (0.01, 0.1, 1.0)), "rf": ("min_samples_leaf", (1, 5)), "xgboost": ("max_depth", (2, 4)),
         "probe": ("C", (0.01, 0.1, 1.0))}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, default="temporal", help="the generator's planted task")
    p.add_argument("--pretrain-patients", type=int, default=20000, help="N_U: patients pretraining learns from; "
                   "the labelled k-subsets are drawn from them")
    p.add_argument("--test-patients", type=int, default=2000, help="N_T: fixed test patients, never pretrained on")
    p.add_argument("--val-patients", type=int, default=3000, help="pool the validation sets (k per class) are "
                   "drawn from; never pretrained on")
    p.add_argument("--k", default="16,32,64,128,256,all", help="labelled patients per class, comma-separated")
    p.add_argument("--replicates", type=int, default=5, help="k-subsets drawn per k")
    p.add_argument("--seed", type=int, default=7, help="the generator's seed; drives everything")
    p.add_argument("--out", default="benchmarks/results/label_efficiency", help="output folder (benchmarks/results/ "
                   "is not versioned)")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of " + ", ".join(ARMS))
    p.add_argument("--model-size", default="small", help="ExMed-BERT preset (tiny, small, ...); small pretrained "
                   "on 20,000 patients is what fits the default run in 30 minutes on 2 cores")
    p.add_argument("--time-buckets", type=int, default=0, help="pretraining's time embedding (0: off)")
    p.add_argument("--time2vec", action="store_true", help="pretrain with Time2Vec embeddings of day and age")
    p.add_argument("--clinvec-dir", default="", help="initialise pretraining's code embeddings from this ClinVec "
                   "folder (a release, or the DEMO embeddings built beside it as the pipeline does); off by default")
    p.add_argument("--pooling", choices=("cls", "mean"), default="cls", help="one vector per patient, for "
                   "fine-tuning's classifier and the probe's embedding")
    p.add_argument("--finetune-learning-rate", type=float, default=None, help="fine-tuning's rate (default: the "
                   "one tuned for the model size)")
    p.add_argument("--pretrain-epochs", type=float, default=3.0)
    p.add_argument("--pretrain-steps", type=int, default=-1, help="stop pretraining after this many updates")
    p.add_argument("--finetune-epochs", type=float, default=5.0, help="with early stopping on val AUROC")
    p.add_argument("--finetune-max-steps", type=int, default=200, help="a fine-tuning run takes fewer epochs when "
                   "its epochs would pass this many updates (at least one epoch): bounds the 'all' runs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--trees", type=int, default=300, help="RF trees and most XGBoost rounds")
    p.add_argument("--xgb-patience", type=int, default=20, help="XGBoost stops after this many rounds without a "
                   "better validation log-loss (0: never)")
    a = p.parse_args(argv)
    a.k, a.arms = parse_ks(a.k), [x.strip() for x in a.arms.split(",") if x.strip()]
    bad = [x for x in a.arms if x not in ARMS]
    if bad:
        raise UserError(f"--arms: unknown {', '.join(bad)}; expected some of {', '.join(ARMS)}")
    if min(a.pretrain_patients, a.test_patients, a.val_patients, a.replicates, a.finetune_max_steps) < 1:
        raise UserError("--pretrain-patients, --test-patients, --val-patients, --replicates and --finetune-max-steps "
                        "must be at least 1")
    if a.xgb_patience < 0:
        raise UserError(f"--xgb-patience must be 0 or more, got {a.xgb_patience}")
    return a


def validated(args):
    """A stage's settings as its command line would hand them over: checked and resolved (`validate`)."""
    args.validate()
    return args


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_write(path) as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def prepare(a, out: Path, clock: dict):
    """Generate, keep the three pools, convert once; returns what the arms share. Patients are generated in
    whole chunks (each chunk has its own RNG, so patient i is the same whatever the cohort's size) and renamed
    to `canonical_id`, so the val and test pools are the same patients for every --pretrain-patients."""
    t0 = time.perf_counter()
    gen = out / "generated"
    n_gen = -(-patients_to_generate(a.pretrain_patients, a.val_patients, a.test_patients) // CHUNK_SIZE) * CHUNK_SIZE
    generate(validated(GenerateArgs(num_patients=n_gen, seed=a.seed, task=a.task, output=str(gen / "patients.jsonl"),
                                    task_output=str(gen / "task.csv"))))
    clock["generate"] = time.perf_counter() - t0
    task = [dict(r, patient_id=canonical_id(r["patient_id"])) for r in read_rows(gen / "task.csv")]
    pools = assign_pools([r["patient_id"] for r in task], a.pretrain_patients, a.val_patients, a.test_patients, a.seed)
    keep = set(pools.pretrain) | set(pools.val) | set(pools.test)
    lines = {}
    with open(gen / "patients.jsonl", encoding="utf-8") as f, atomic_write(out / "patients.jsonl") as g:
        for line in f:
            patient = json.loads(line)
            pid = canonical_id(patient["patient_id"])
            if pid in keep:
                if pid != patient["patient_id"]:     # re-serialised only when renamed
                    patient["patient_id"] = pid
                    line = json.dumps(patient, separators=(",", ":")) + "\n"
                g.write(line)
                lines[pid] = line
    write_rows(out / "task.csv", [r for r in task if r["patient_id"] in keep])
    risk = {canonical_id(r["patient_id"]): float(r["true_risk"]) for r in read_rows(gen / "task_risk.csv")}
    t0 = time.perf_counter()
    convert(validated(ConvertArgs(input=str(out / "patients.jsonl"), output=str(out / "data" / "synthetic.pt"),
                                  task_data=str(out / "task.csv"), seed=a.seed, train_ratio=pools.train_ratio,
                                  max_length=a.max_length)))
    splits, vocab, _ = load_task_splits(out / "data", out / "task.csv", num_labels=2, output_dir=out)
    clock["convert"] = time.perf_counter() - t0
    pretrained_on = set(PatientDataset.load(out / "data" / "synthetic_train.pt").patient_ids)
    leaked = pretrained_on & (set(pools.test) | set(pools.val))
    if leaked:  # the conversion must split as assign_pools did
        raise UserError(f"{len(leaked)} test/val patients are in the pretraining split (e.g. {sorted(leaked)[0]})")
    return pools, splits, vocab, risk, lines, {r["patient_id"]: r for r in task}


def tabular_arm(arm, a, X, y, subsets, vals, ks):
    name, _ = TABULAR[arm]
    field, grid = GRIDS[name]
    cls = {"logreg": LogRegArgs, "rf": RFArgs, "xgboost": XGBArgs}[name]
    for r, (tr, va) in enumerate(zip(subsets, vals)):
        for k in tr:  # "all" only in the first replicate
            # only the columns the labelled patients use: a column that is constant on them cannot split a tree
            # and standardises to 0 for logistic regression, and dropping it makes XGBoost's histograms cheap
            # (24,841 windows_order columns, 807 of them used by 32 patients)
            cols = np.flatnonzero(X["train"][tr[k]].getnnz(axis=0) > 0)
            Xtr, Xva, Xte = X["train"][tr[k]][:, cols], X["val"][va[k]][:, cols], X["test"][:, cols]
            best = None
            for value in grid:
                kw = {} if name == "logreg" else {"n_estimators": a.trees, "n_jobs": 2}
                model = registry.get(name).build(validated(cls(seed=a.seed + r, **kw, **{field: value})), None)
                if name == "xgboost" and a.xgb_patience > 0:  # early stopping on the validation set
                    model.set_params(early_stopping_rounds=a.xgb_patience)
                    model.fit(Xtr, y["train"][tr[k]], eval_set=[(Xva, y["val"][va[k]])], verbose=False)
                else:
                    model.fit(Xtr, y["train"][tr[k]])
                score = auroc_auprc(y["val"][va[k]], model.predict_proba(Xva)[:, 1])[0]
                if best is None or score > best[0]:
                    best = (score, model)
            yield r, k, auroc_auprc(y["test"], best[1].predict_proba(Xte)[:, 1])


def scratch_model(pretrained: Path, folder: Path, seed: int) -> Path:
    """The pretrained model's architecture with fresh weights (no pretraining), as a model folder."""
    import torch

    from exmed_bert.model.configuration import ExMedBertConfig
    from exmed_bert.model.modeling import ExMedBertForPreTraining

    torch.manual_seed(seed)
    model = ExMedBertForPreTraining(ExMedBertConfig.from_pretrained(pretrained))
    model.save_pretrained(folder)
    shutil.copy(pretrained / "vocab.json", folder / "vocab.json")
    return folder


def bert_arm(a, model_dir, out, pools, splits, lines, task_rows, subsets, vals, ks):
    """Fine-tune `model_dir` on each k-subset through the fine-tuning stage; the run encodes only its own
    patients (the subset, its validation set, the test patients) with the model's vocabulary."""
    from exmed_bert.training.args import FinetuneArgs
    from exmed_bert.training.finetune import run as finetune

    ids = {s: list(splits[s].patient_ids) for s in ("train", "val", "test")}
    for r, (tr, va) in enumerate(zip(subsets, vals)):
        for k in tr:  # "all" only in the first replicate
            run = out / f"k{k}_r{r}"
            run.mkdir(parents=True, exist_ok=True)
            chosen = [ids["train"][i] for i in tr[k]] + [ids["val"][i] for i in va[k]] + ids["test"]
            with atomic_write(run / "patients.jsonl") as f:
                f.writelines(lines[p] for p in chosen)
            write_rows(run / "task.csv", [task_rows[p] for p in chosen])
            epochs = finetune_epochs(len(tr[k]), a.batch_size, a.finetune_epochs, a.finetune_max_steps)
            finetune(validated(FinetuneArgs(model_path=str(model_dir), data_dir=str(run / "no_conversion"),
                                  input=str(run / "patients.jsonl"), task_data=str(run / "task.csv"),
                                  output_dir=str(run), num_epochs=epochs, batch_size=a.batch_size,
                                  max_length=a.max_length, split_seed=a.seed, train_ratio=pools.train_ratio,
                                  pooling=a.pooling, learning_rate=a.finetune_learning_rate,
                                  n_bootstrap=1, seed=a.seed + r, logging_steps=1000)))
            pred = read_rows(run / "predictions.csv")
            for d in run.glob("checkpoint-*"):
                shutil.rmtree(d)
            yield r, k, auroc_auprc(np.array([int(p["label"]) for p in pred]),
                                    np.array([float(p["probability"]) for p in pred]))


def probe_arm(a, model_dir, out, splits, y, subsets, vals, ks):
    """Embed every patient once with the frozen encoder (embed-patients.py's main), then an L2 logistic
    regression on standardised embeddings per k-subset, its C chosen on the validation set."""
    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if embed(["--model-path", str(model_dir), "--data-dir", str(out / "data"), "--task-data", str(out / "task.csv"),
               "--output", str(out / "embeddings.parquet"), "--split", "all", "--max-length", str(a.max_length),
               "--pooling", a.pooling, "--device", "cpu"]) != 0:
        raise UserError("embed-patients failed; see its message above")
    table = pq.read_table(out / "embeddings.parquet").to_pydict()
    emb = {s: np.asarray(e, dtype=np.float32) for s, e in zip(table["subject_id"], table["embedding"])}
    # the Parquet's subject_id is the MEDS int64 (the generator's P0042 -> 42) where every id has one
    key = (lambda p: meds_subject_id(p)) if isinstance(table["subject_id"][0], int) else str
    E = {s: np.stack([emb[key(p)] for p in splits[s].patient_ids]) for s in ("train", "val", "test")}
    for r, (tr, va) in enumerate(zip(subsets, vals)):
        for k in tr:  # "all" only in the first replicate
            best = None
            for C in GRIDS["probe"][1]:
                m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=a.seed + r))
                m.fit(E["train"][tr[k]], y["train"][tr[k]])
                score = auroc_auprc(y["val"][va[k]], m.predict_proba(E["val"][va[k]])[:, 1])[0]
                if best is None or score > best[0]:
                    best = (score, m)
            yield r, k, auroc_auprc(y["test"], best[1].predict_proba(E["test"])[:, 1])


@cli_entry
def main(argv=None) -> int:
    a = parse(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    clock: dict[str, float] = {}
    pools, splits, vocab, risk, lines, task_rows = prepare(a, out, clock)
    data = {s: splits[s].data for s in ("train", "val", "test")}
    y = {s: labels_of(data[s], f"{s} split") for s in data}
    test_ids = list(splits["test"].patient_ids)
    oracle = auroc_auprc(y["test"], np.array([risk[p] for p in test_ids]))[0]
    # "all" is the same pool in every replicate, so it runs once
    subsets = [draw_subsets(y["train"], a.k if r == 0 else [k for k in a.k if k != ALL], a.seed, r, "labelled")
               for r in range(a.replicates)]
    vals = [draw_subsets(y["val"], list(s), a.seed, r, "validation", stream=1) for r, s in enumerate(subsets)]
    print(f"{len(pools.pretrain):,} pretraining / {len(pools.val):,} validation pool / {len(test_ids):,} test patients "
          f"(test oracle AUROC {oracle:.3f}); k = {', '.join(a.k)}; {a.replicates} replicates")
    auroc = {arm: {k: [] for k in a.k} for arm in a.arms}
    auprc = {arm: {k: [] for k in a.k} for arm in a.arms}
    X = {}
    runs: dict = {}
    pretrained = out / "pretrained" / "checkpoint-best"
    if {"bert_finetune", "bert_probe", "bert_scratch"} & set(a.arms):
        from exmed_bert.synthetic.clinvec_demo import with_demo_release
        from exmed_bert.training.args import PretrainArgs
        from exmed_bert.training.pretrain import run as pretrain

        t0 = time.perf_counter()
        with_demo_release(pretrain)(validated(PretrainArgs(
            data_dir=str(out / "data"), output_dir=str(out / "pretrained"), model_size=a.model_size,
            num_epochs=a.pretrain_epochs, max_steps=a.pretrain_steps, batch_size=a.batch_size,
            time_buckets=a.time_buckets, time2vec=a.time2vec, pooling=a.pooling, seed=a.seed,
            use_clinvec=bool(a.clinvec_dir), clinvec_dir=a.clinvec_dir or "ClinVec",
            logging_steps=1000)))
        clock["pretrain"] = time.perf_counter() - t0
    for arm in a.arms:
        t0 = time.perf_counter()
        if arm in TABULAR:
            fs = TABULAR[arm][1]
            if fs not in X:
                pairs = order_pairs(vocab.tokens, vocab.counts) if fs == "windows_order" else None
                X[fs] = {s: featurize(data[s], len(vocab), fs, pairs=pairs) for s in data}
            runs = tabular_arm(arm, a, X[fs], y, subsets, vals, a.k)
        elif arm == "bert_probe":
            runs = probe_arm(a, pretrained, out, splits, y, subsets, vals, a.k)
        else:
            model = pretrained if arm == "bert_finetune" else scratch_model(pretrained, out / "scratch", a.seed)
            runs = bert_arm(a, model, out / "runs" / arm, pools, splits, lines, task_rows, subsets, vals, a.k)
        for r, k, (roc, pr) in runs:
            auroc[arm][k].append(roc)
            auprc[arm][k].append(pr)
            print(f"[{arm}] k={k} replicate {r}: test AUROC {roc:.3f}, AUPRC {pr:.3f} "
                  f"({time.perf_counter() - t0:.0f} s so far)", flush=True)
        clock[arm] = time.perf_counter() - t0
    settings = {k: v for k, v in vars(a).items()}
    settings.update(train_ratio=pools.train_ratio, n_pretrain=len(pools.pretrain), n_val_pool=len(pools.val))
    doc = results_doc(oracle, len(test_ids), auroc, auprc, clock, settings)
    write_results(out, doc, title=f"{a.task}: {len(pools.pretrain):,} pretraining patients, seed {a.seed}")
    print(f"wrote {out}/results.json, table.md and auroc_vs_k.png; wall time "
          + ", ".join(f"{k} {v:.0f} s" for k, v in clock.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
