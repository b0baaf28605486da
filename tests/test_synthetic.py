"""Synthetic generator: schema, determinism, novel rate, valid codes, planted signal, bad arguments."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re

import numpy as np
import pytest

from exmed_bert.cli.generate import main
from exmed_bert.synthetic import task
from exmed_bert.synthetic.embedding_vocab import ancestors, demo_codes, emitted_codes, novel_codes
from exmed_bert.synthetic.writer import risk_path

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _gen(tmp_path, n, *extra, name="p.json"):
    out, task_csv = tmp_path / name, tmp_path / (name.split(".")[0] + "_task.csv")
    rc = main(["-n", str(n), "--output", str(out), "--task-output", str(task_csv), *extra])
    assert rc == 0
    return out, task_csv


def _load(out):
    if out.suffix == ".jsonl":
        patients = [json.loads(line) for line in out.read_text().splitlines()]
        return patients, json.loads(out.with_name(out.stem + ".metadata.json").read_text())
    doc = json.loads(out.read_text())
    return doc["patients"], doc["metadata"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """10,000 patients (about 2 s): the size at which the novel rate must be within 20% of its target."""
    out, task_csv = _gen(tmp_path_factory.mktemp("cohort"), 10_000)
    patients, meta = _load(out)
    with open(task_csv, newline="") as f:
        labels = list(csv.DictReader(f))
    return patients, meta, labels


def test_schema_and_task_csv(tmp_path):
    out, task_csv = _gen(tmp_path, 50)
    patients, meta = _load(out)
    assert [p["patient_id"] for p in patients] == [f"P{i:02d}" for i in range(1, 51)]
    for p in patients:
        assert list(p) == ["patient_id", "birth_date", "sex", "diagnoses", "prescriptions", "procedures",
                           "hospitalizations"]
        assert p["sex"] in ("F", "M") and ISO.match(p["birth_date"])
        for kind in ("diagnoses", "prescriptions", "procedures"):
            dates = [e["date"] for e in p[kind]]
            assert all(list(e) == ["code", "date"] for e in p[kind])
            assert dates == sorted(dates) and all("2020-01-01" <= d <= "2024-12-31" for d in dates)
        for s in p["hospitalizations"]:
            assert s["admission_date"] < s["discharge_date"]
    assert meta["counts"]["patients"] == 50 and meta["seed"] == 42
    assert meta["counts"]["diagnoses"] == sum(len(p["diagnoses"]) for p in patients)
    for key in ("realised_rate", "target"):
        assert key in meta["novel_codes"]
    assert {"p50", "p95", "max"} <= set(meta["codes_per_patient"])
    rows = list(csv.reader(open(task_csv, newline="")))
    assert rows[0] == ["patient_id", "label", "prediction_date"] and len(rows) == 51
    assert {r[1] for r in rows[1:]} <= {"0", "1"}
    assert all("2020-01-01" < r[2] < "2024-01-01" for r in rows[1:])


def test_jsonl_matches_json(tmp_path):
    a, _ = _gen(tmp_path, 30, name="a.json")
    b, _ = _gen(tmp_path, 30, name="b.jsonl")
    assert _load(a) == _load(b)
    assert len(b.read_text().splitlines()) == 30


def test_same_args_give_byte_identical_files(tmp_path):
    a, ta = _gen(tmp_path, 1200, name="a.json")       # two chunks
    b, tb = _gen(tmp_path, 1200, name="b.json")
    c, _ = _gen(tmp_path, 1200, "--seed", "7", name="c.json")
    assert a.read_bytes() == b.read_bytes() and ta.read_bytes() == tb.read_bytes()
    assert risk_path(ta).read_bytes() == risk_path(tb).read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))          # atomic writes left no temp files


def test_novel_rate_and_novel_codes_have_embedded_parents(cohort):
    patients, meta, _ = cohort
    vocab = demo_codes()
    total = novel = 0
    for p in patients:
        for kind, system in (("diagnoses", "icd10cm"), ("prescriptions", "atc")):
            for e in p[kind]:
                total += 1
                if f"{system}:{e['code']}" not in vocab:
                    novel += 1
                    assert f"{system}:{ancestors(e['code'], system)[0]}" in vocab   # direct parent embedded
                    assert e["code"] in novel_codes()[system]
    assert novel / total == pytest.approx(meta["novel_codes"]["realised_rate"], abs=1e-6)
    assert abs(novel / total - 0.01) <= 0.2 * 0.01


def test_higher_novel_rate_and_zero(tmp_path):
    out, _ = _gen(tmp_path, 2000, "--novel-prob", "0.05", name="hi.json")
    assert abs(_load(out)[1]["novel_codes"]["realised_rate"] - 0.05) <= 0.01
    out, _ = _gen(tmp_path, 200, "--novel-prob", "0", name="zero.json")
    assert _load(out)[1]["novel_codes"]["novel"] == 0


def test_demo_vocabulary_covers_emitted_codes_and_ancestors_not_novel():
    vocab = demo_codes()
    for system, codes in emitted_codes().items():
        for code in codes:
            assert f"{system}:{code}" in vocab
            assert all(f"{system}:{a}" in vocab for a in ancestors(code, system))
    for system, codes in novel_codes().items():
        assert not any(f"{system}:{c}" in vocab for c in codes)
    assert "icd10cm:E11" in vocab and "atc:A10BA" in vocab and "atc:A" in vocab


def test_codes_are_valid_in_their_systems(cohort):
    codes = pytest.importorskip("exmed_bert.codes")
    patients, _, _ = cohort
    seen = {"icd10cm": set(), "atc": set(), "cpt": set()}
    for p in patients:
        for kind, system in (("diagnoses", "icd10cm"), ("prescriptions", "atc"), ("procedures", "cpt")):
            seen[system].update(e["code"] for e in p[kind])
    for system, values in seen.items():
        for code in values:
            assert codes.normalize(code, system) == code and codes.is_known(code, system), (system, code)
            if system != "cpt":
                assert codes.is_leaf(code, system), (system, code)
    assert len(seen["icd10cm"]) > 80 and len(seen["atc"]) > 50


def _has(p, kind, prefix):
    return any(e["code"].startswith(prefix) for e in p[kind])


def test_comorbidity_links_show_up(cohort):
    patients, meta, _ = cohort
    diabetic = np.array([_has(p, "diagnoses", "E11") for p in patients])
    metformin = np.array([_has(p, "prescriptions", "A10BA02") for p in patients])
    ckd = np.array([_has(p, "diagnoses", "N18") for p in patients])
    hba1c = np.array([_has(p, "procedures", "83036") for p in patients])
    assert 0.05 < diabetic.mean() < 0.3
    assert metformin[diabetic].mean() > 10 * metformin[~diabetic].mean()
    assert hba1c[diabetic].mean() > 3 * hba1c[~diabetic].mean()
    assert ckd[diabetic].mean() > 2 * ckd[~diabetic].mean()
    assert sum(v > 0 for v in meta["condition_prevalence"].values()) >= 20


def test_history_lengths_are_long_tailed(cohort):
    _, meta, _ = cohort
    q = meta["codes_per_patient"]
    assert 50 <= q["p50"] <= 110 and q["p99"] > 3 * q["p50"]


def test_task_prevalence_oracle_and_outcome_placement(cohort):
    patients, meta, labels = cohort
    y = np.array([int(r["label"]) for r in labels])
    assert 0.08 <= y.mean() <= 0.18                    # intended band: ~12%
    assert meta["task"]["prevalence"] == pytest.approx(y.mean())
    assert 0.7 < meta["task"]["oracle_auroc"] < 0.95
    # The label is exactly "an admission with an I50.x code within 365 days after the prediction date".
    for p, r in zip(patients, labels):
        pred = dt.date.fromisoformat(r["prediction_date"])
        end = (pred + dt.timedelta(days=365)).isoformat()
        i50_days = {e["date"] for e in p["diagnoses"] if e["code"].startswith("I50")}
        hit = any(pred.isoformat() < s["admission_date"] <= end and s["admission_date"] in i50_days
                  for s in p["hospitalizations"])
        assert hit == (r["label"] == "1"), p["patient_id"]


def test_true_risk_file_beside_the_task_csv(tmp_path, capsys):
    out, task_csv = _gen(tmp_path, 1200, "--seed", "3")               # two chunks
    risk = tmp_path / "p_task_risk.csv"
    assert risk_path(task_csv) == risk and risk.is_file()
    assert str(risk) in capsys.readouterr().out                       # named in the final line
    with open(risk, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(task_csv, newline="") as f:
        labels = list(csv.DictReader(f))
    assert list(rows[0]) == ["patient_id", "true_risk"]
    assert [r["patient_id"] for r in rows] == [r["patient_id"] for r in labels]   # one row per patient
    prob = np.array([float(r["true_risk"]) for r in rows])
    assert ((prob > 0) & (prob < 1)).all() and len(np.unique(prob)) > 100
    y = np.array([int(r["label"]) for r in labels])
    # The metadata's whole-cohort oracle (rounded to 6 decimals) is the AUROC of exactly these risks.
    assert task.oracle_auroc(prob, y) == pytest.approx(_load(out)[1]["task"]["oracle_auroc"], abs=5e-7)
    # Drawn from these risks: the mean risk tracks the prevalence (12 SE of a binomial mean at n=1200 ~ 0.11)
    assert abs(prob.mean() - y.mean()) < 12 * np.sqrt(y.mean() * (1 - y.mean()) / len(y))
    _gen(tmp_path, 1200, "--seed", "3", name="q.json")
    assert risk_path(tmp_path / "q_task.csv").read_bytes() == risk.read_bytes()   # deterministic per seed


def test_output_cannot_be_the_risk_file(tmp_path, capsys):
    rc = main(["-n", "5", "--output", str(tmp_path / "t_risk.csv"), "--task-output", str(tmp_path / "t.csv")])
    assert rc == 2 and "--output" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_length_of_stay_depends_on_age(cohort):
    patients, _, _ = cohort
    old, young = [], []
    for p in patients:
        age = 2024 - int(p["birth_date"][:4])
        for s in p["hospitalizations"]:
            los = (dt.date.fromisoformat(s["discharge_date"]) - dt.date.fromisoformat(s["admission_date"])).days
            (old if age >= 75 else young if age < 50 else []).append(los)
    assert np.mean(old) > 1.3 * np.mean(young)


def test_oracle_auroc_known_values():
    # sklearn's roc_auc_score docs example (0.75); ties count one half; one class -> None
    assert task.oracle_auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert task.oracle_auroc(np.array([0.5, 0.5, 0.9]), np.array([0, 1, 1])) == pytest.approx(0.75)
    assert task.oracle_auroc(np.array([0.2, 0.3]), np.array([0, 0])) is None


@pytest.mark.parametrize("argv, needle", [
    (["-n", "0"], "--num-patients"),
    (["--novel-prob", "1.5"], "--novel-prob"),
    (["--novel-prob", "-0.1"], "--novel-prob"),
    (["--start-date", "2020-13-01"], "--start-date"),
    (["--start-date", "2024-06-01"], "history window"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    rc = main([*argv, "--output", str(tmp_path / "p.json"), "--task-output", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "p.json").exists()


def test_unwritable_output_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (tmp_path, blocker / "p.json"):             # a folder; a path under a file
        rc = main(["-n", "5", "--output", str(out), "--task-output", str(tmp_path / "t.csv")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "--output" in err


def test_clinvec_vocabulary_drives_the_novel_rate(tmp_path, monkeypatch):
    from exmed_bert.clinvec import loader

    vocab = demo_codes() - {"icd10cm:E11.9", "atc:C09AA03"}     # frequent codes this release lacks
    # the generator reads a release's codes through the loader (imported when a release is given)
    monkeypatch.setattr(loader, "available_codes", lambda d, vocab_types=None: set(vocab))
    (tmp_path / "ClinGraph_nodes.csv").write_text("node_id\tnode_name\tntype\tnode_index\n")  # a release folder
    out, _ = _gen(tmp_path, 2000, "--novel-prob", "0.05", "--clinvec-dir", str(tmp_path))
    patients, meta = _load(out)
    assert meta["novel_codes"]["embedding_vocabulary"] == str(tmp_path)
    assert abs(meta["novel_codes"]["realised_rate"] - 0.05) <= 0.01
    assert any(e["code"] == "E11.9" for p in patients for e in p["diagnoses"])   # still emitted, now novel


def test_single_patients_including_empty_histories(tmp_path):
    sizes = []
    for seed in range(12):
        out, _ = _gen(tmp_path, 1, "--seed", str(seed), name=f"s{seed}.json")
        (p,), meta = _load(out)
        assert p["patient_id"] == "P1"
        sizes.append(meta["codes_per_patient"]["max"])
    assert len(set(sizes)) > 1
