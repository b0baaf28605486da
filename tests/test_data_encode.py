"""Encoding layout, truncation, task cut (no leakage), splits, vocabulary, storage and collation."""

import json
import os

import numpy as np
import pytest
import torch

from exmed_bert.data.collate import Collator
from exmed_bert.data.sampler import bucket_lengths
from exmed_bert.convert.conversion import convert_patients, output_paths
from exmed_bert.convert.task_datasets import task_datasets_for
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.data.splits import split_of
from exmed_bert.data.vocab import CLS_ID, SEP_ID, UNK_ID, Vocab
from exmed_bert.errors import UserError


def ev(code, date, **kw):
    return {"code": code, "date": date, **kw}


def one_patient():
    # visits: 2020-01-01 (dx I10, proc 99213, drug N02BE01, dx E11.65), 2020-02-01 (dx E11.9), 2020-03-01 (drug)
    return {"patient_id": "A", "birth_date": "1980-01-15", "sex": "M",
            "diagnoses": [ev("I10", "2020-01-01"), ev("E11.9", "2020-02-01"), ev("E1165", "2020-01-01")],
            "prescriptions": [ev("N02BE01", "2020-03-01"), ev("N02BE01", "2020-01-01")],
            "procedures": [ev("99213", "2020-01-01")],
            "hospitalizations": [{"admission_date": "2020-02-01", "discharge_date": "2020-02-11"}]}


def convert_one(tmp_path, pat, **kw):
    (tmp_path / "in.jsonl").write_text(json.dumps(pat) + "\n")
    out = tmp_path / "ds.pt"
    kw.setdefault("train_ratio", 0.999999)
    convert_patients(tmp_path / "in.jsonl", out, progress=False, **kw)
    return PatientDataset.load(tmp_path / "ds_train.pt"), Vocab.load(tmp_path / "vocab.json")


def decode(ds, vocab, i=0):
    return [vocab.token(t) for t in ds[i]["input_ids"].tolist()]


def test_layout_cls_visits_sep_and_parallel_fields(tmp_path):
    assert split_of("A", 42, 0.999999) == "train"
    ds, vocab = convert_one(tmp_path, one_patient())
    assert decode(ds, vocab) == ["[CLS]", "icd10cm:E11.65", "icd10cm:I10", "atc:N02BE01", "cpt:99213", "[SEP]",
                                 "icd10cm:E11.9", "[SEP]", "atc:N02BE01", "[SEP]"]
    item = ds[0]
    assert item["token_type_ids"].tolist() == [0, 1, 1, 2, 3, 0, 1, 0, 2, 0]
    assert item["position_ids"].tolist() == [0, 1, 1, 1, 1, 1, 2, 2, 3, 3]
    assert item["age_ids"].tolist() == [39] * 6 + [40] * 4  # birthday on 15 January
    assert item["sex"] == 2 and item["plos_los"] == 10 and ds.lengths.tolist() == [10]
    assert ds.data["days"][0].item() == ds.data["days"][1].item() == 18262  # [CLS] takes the first visit's day
    assert ds.stays(0).tolist() == [10] and ds.stay_starts(0).tolist() == [18293]  # admitted 2020-02-01
    assert ds.data["los_start_days"].dtype == torch.int32


def test_truncation_keeps_most_recent_whole_visits(tmp_path):
    p = {"patient_id": "A", "diagnoses": [ev(f"E11.{i}", f"2020-01-0{i + 1}") for i in range(6)]
         + [ev("I10", "2020-01-06")]}
    ds, vocab = convert_one(tmp_path, p, max_length=8)
    # visits cost 2,2,2,2,2,3 tokens; [CLS] + the last 3 visits (2+2+3) = 8
    assert decode(ds, vocab) == ["[CLS]", "icd10cm:E11.3", "[SEP]", "icd10cm:E11.4", "[SEP]",
                                 "icd10cm:E11.5", "icd10cm:I10", "[SEP]"]
    assert ds[0]["position_ids"].tolist() == [0, 1, 1, 2, 2, 3, 3, 3]


def test_single_visit_longer_than_budget_keeps_its_first_codes(tmp_path):
    p = {"patient_id": "A", "diagnoses": [ev(f"E11.{i}", "2020-01-01") for i in range(9)]}
    ds, vocab = convert_one(tmp_path, p, max_length=5)
    assert decode(ds, vocab) == ["[CLS]", "icd10cm:E11.0", "icd10cm:E11.1", "icd10cm:E11.2", "[SEP]"]


def patients(n, start=0):
    return [{"patient_id": f"P{i}", "birth_date": "1960-05-05", "sex": "FM"[i % 2],
             "diagnoses": [ev("E11.9", "2020-01-01"), ev(f"I{10 + i % 30}", "2020-06-01"), ev("J45.909", "2021-01-01")],
             "prescriptions": [ev("A10BA02", "2020-06-01")],
             "procedures": [ev(f"9{9201 + i}", "2021-01-01")]} for i in range(start, start + n)]


def write(path, pats):
    path.write_text("".join(json.dumps(p) + "\n" for p in pats))
    return path


def test_splits_are_stable_when_patients_are_added():
    before = {f"P{i}": split_of(f"P{i}", 7, 0.8) for i in range(500)}
    after = {f"P{i}": split_of(f"P{i}", 7, 0.8) for i in range(1000)}
    assert all(after[k] == v for k, v in before.items())
    shares = np.array([list(after.values()).count(s) for s in ("train", "val", "test")]) / 1000
    assert abs(shares[0] - 0.8) < 0.05 and abs(shares[1] - shares[2]) < 0.05
    assert sum(split_of(f"P{i}", 8, 0.8) != before[f"P{i}"] for i in range(500)) > 50  # the seed matters


def test_vocab_from_train_only_and_unk_counted(tmp_path):
    src = write(tmp_path / "in.jsonl", patients(60))
    man = convert_patients(src, tmp_path / "ds.pt", seed=3, progress=False)
    vocab = Vocab.load(tmp_path / "vocab.json")
    train = PatientDataset.load(tmp_path / "ds_train.pt")
    train_tokens = {vocab.token(t) for t in train.data["input_ids"].tolist()}
    assert set(vocab.tokens) == train_tokens | {"[PAD]", "[UNK]", "[MASK]"}
    assert UNK_ID not in train.data["input_ids"].tolist()
    for s in ("val", "test"):
        ds = PatientDataset.load(tmp_path / f"ds_{s}.pt")
        unk = int((ds.data["input_ids"] == UNK_ID).sum())
        assert unk == man["splits"][s]["unk_tokens"] > 0  # each patient's own CPT code is unseen in train
    assert man["splits"]["train"]["patients"] == len(train) == sum(split_of(f"P{i}", 3, 0.8) == "train" for i in range(60))
    # min_code_count drops codes rarer than the threshold
    convert_patients(src, tmp_path / "m.pt", seed=3, min_code_count=2, progress=False)
    assert "cpt:99201" not in Vocab.load(tmp_path / "vocab.json") and "icd10cm:E11.9" in Vocab.load(tmp_path / "vocab.json")


def test_task_cut_excludes_events_on_or_after_prediction_date(tmp_path):
    src = write(tmp_path / "in.jsonl", patients(40))
    csv = tmp_path / "task.csv"
    csv.write_text("patient_id,label,prediction_date\n" + "".join(
        f"P{i},{i % 2},{'2021-01-01' if i % 3 else '2020-06-01'}\n" for i in range(30)) + "P999,1,2020-01-01\n")
    man = convert_patients(src, tmp_path / "ds.pt", task_data=csv, seed=1, progress=False)
    t = man["task"]
    assert t["unlabelled_patients"] == 10 and t["label_rows"]["subject_not_in_data"] == 1
    assert t["label_rows"]["read"] == 31 == t["label_rows"]["kept"] + t["label_rows"]["kept_without_history"] + 1
    assert sum(s["patients"] for s in t["splits"].values()) == 30
    paths = output_paths(tmp_path / "ds.pt", task=True)
    seen = 0
    for s in ("train", "val", "test"):
        ds = PatientDataset.load(paths[s])
        assert ds.has_labels
        for i in range(len(ds)):
            pid = int(ds.patient_ids[i][1:])
            cut = ds.data["prediction_days"][i].item()
            days = ds.data["days"][ds.offsets[i]:ds.offsets[i + 1]]
            assert days.max().item() < cut  # strictly before the prediction date
            assert ds[i]["label"] == pid % 2 and split_of(ds.patient_ids[i], 1, 0.8) == s
            seen += 1
    assert seen == 30
    # the pretraining splits are still written, untouched by the cut
    assert len(PatientDataset.load(tmp_path / "ds_train.pt")) + len(PatientDataset.load(tmp_path / "ds_val.pt")) \
        + len(PatientDataset.load(tmp_path / "ds_test.pt")) == 40


def test_task_stays_are_cut_only_where_there_is_a_prediction_date(tmp_path):
    pats = [dict(one_patient(), patient_id=f"P{i}") for i in range(3)]  # stay 2020-02-01 .. 2020-02-11
    csv = tmp_path / "task.csv"
    csv.write_text("patient_id,label,prediction_date\nP0,1,2020-02-05\nP1,0,2020-02-01\nP2,1,\n")
    man = convert_patients(write(tmp_path / "in.jsonl", pats), tmp_path / "ds.pt", task_data=csv,
                           train_ratio=0.999999, progress=False)
    ds = PatientDataset.load(tmp_path / "ds_task_train.pt")
    got = {pid: (ds.stay_starts(i).tolist(), ds.stays(i).tolist()) for i, pid in enumerate(ds.patient_ids)}
    # open on 2020-02-05: 4 days known; admitted on the prediction date: dropped; no date: whole history
    assert got == {"P0": ([18293], [4]), "P1": ([], []), "P2": ([18293], [10])}
    assert ds.plos_los.tolist() == [4, 0, 10]
    assert man["task"]["splits"]["train"]["stays_cut_at_prediction_date"] == {"dropped": 1, "truncated": 1}
    pre = PatientDataset.load(tmp_path / "ds_train.pt")  # pretraining keeps every stay
    assert [pre.stays(i).tolist() for i in range(3)] == [[10]] * 3


def test_datasets_from_before_admission_days(tmp_path):
    """Converted before `los_start_days` existed: a pretraining dataset loads (stay dates unknown), a task
    dataset, whose stays were not cut at the prediction date, is refused with a one-line hint."""
    csv = tmp_path / "task.csv"
    csv.write_text("patient_id,label,prediction_date\nA,1,2020-03-01\n")
    convert_one(tmp_path, one_patient(), task_data=csv)
    old = dict(torch.load(tmp_path / "ds_train.pt", weights_only=True))
    del old["los_start_days"]
    torch.save(old, tmp_path / "old.pt")
    ds = PatientDataset.load(tmp_path / "old.pt")
    assert ds.stays(0).tolist() == [10] and ds[0]["plos_los"] == 10 and ds.stay_starts(0) is None
    old_task = dict(torch.load(tmp_path / "ds_task_train.pt", weights_only=True))
    del old_task["los_start_days"]
    torch.save(old_task, tmp_path / "old_task.pt")
    with pytest.raises(UserError, match="re-run scripts/convert_synthetic_to_dataset.py --task-data"):
        PatientDataset.load(tmp_path / "old_task.pt")
    old["los_start_days"] = torch.zeros(2, dtype=torch.int32)  # one stay, two admission days
    torch.save(old, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="array lengths disagree"):
        PatientDataset.load(tmp_path / "bad.pt")


def test_task_datasets_for_builds_from_existing_conversion(tmp_path):
    src = write(tmp_path / "in.jsonl", patients(20))
    convert_patients(src, tmp_path / "ds.pt", progress=False)
    csv = tmp_path / "task.csv"
    csv.write_text("patient_id,label\n" + "".join(f"P{i},{i % 2}\n" for i in range(20)))
    paths = task_datasets_for(tmp_path, csv)
    n = sum(len(PatientDataset.load(p)) for p in paths.values())
    assert n == 20 and paths["train"].name == "ds_task_train.pt"
    ds = PatientDataset.load(paths["train"])  # no prediction date: the whole history is kept
    assert ds.lengths.tolist() == PatientDataset.load(tmp_path / "ds_train.pt").lengths.tolist()


def test_round_trip_is_mmapped_and_items_are_views(tmp_path):
    src = write(tmp_path / "in.jsonl", patients(30))
    convert_patients(src, tmp_path / "ds.pt", progress=False)
    raw = torch.load(tmp_path / "ds_train.pt", weights_only=True, mmap=True)
    assert raw["format"] == "exmed-bert-dataset" and raw["version"] == 1
    assert raw["input_ids"].dtype == torch.int32 and raw["offsets"].dtype == torch.int64
    ds = PatientDataset.load(tmp_path / "ds_train.pt")
    item = ds[1]
    assert item["input_ids"].untyped_storage().data_ptr() == ds.data["input_ids"].untyped_storage().data_ptr()
    assert item["input_ids"][0].item() == CLS_ID and item["input_ids"][-1].item() == SEP_ID
    assert len(item["input_ids"]) == ds.lengths[1]


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04truncated", None])
def test_corrupt_or_foreign_file_is_a_user_error(tmp_path, content):
    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"format": "something-else"}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match="not an ExMed-BERT dataset"):
        PatientDataset.load(path)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))
    path = tmp_path / "evil.pt"
    torch.save({"format": "exmed-bert-dataset", "x": Evil()}, path)
    with pytest.raises(UserError, match="not an ExMed-BERT dataset"):
        PatientDataset.load(path)


def test_padded_collator_outputs_model_inputs(tmp_path):
    src = write(tmp_path / "in.jsonl", patients(20))
    csv = tmp_path / "task.csv"
    csv.write_text("patient_id,label\n" + "".join(f"P{i},{i % 2}\n" for i in range(20)))
    convert_patients(src, tmp_path / "ds.pt", task_data=csv, progress=False)
    ds = PatientDataset.load(tmp_path / "ds_task_train.pt")
    batch = Collator(mlm=False)([ds[0], ds[1]])
    b, t = batch["input_ids"].shape
    assert b == 2 and t == bucket_lengths([ds.lengths[:2].max()])[0]
    for k in ("input_ids", "token_type_ids", "position_ids", "age_ids", "sex_ids", "attention_mask"):
        assert batch[k].dtype == torch.long and batch[k].shape == (b, t)
    assert batch["attention_mask"].sum(1).tolist() == ds.lengths[:2].tolist()
    assert batch["labels"].tolist() == [ds[0]["label"], ds[1]["label"]]
    assert batch["input_ids"][0, ds.lengths[0]:].eq(0).all()


def test_example_load_prints_counts_and_decodes_a_patient(tmp_path, capsys):
    from exmed_bert.cli.example_load import main as example_main

    (tmp_path / "in.jsonl").write_text(json.dumps(one_patient()) + "\n")
    convert_patients(tmp_path / "in.jsonl", tmp_path / "ds.pt", train_ratio=0.999999, progress=False)
    assert example_main(["--data", str(tmp_path / "ds_train.pt")]) == 0
    out = capsys.readouterr().out
    assert "1 patients, 10 tokens" in out and "born 1980-01-15" in out
    assert "visit   1  2020-01-01  age  39  icd10cm:E11.65 icd10cm:I10 atc:N02BE01 cpt:99213" in out
    assert example_main(["--data", str(tmp_path / "ds_train.pt"), "--patient", "5"]) == 2


def test_ages_match_calendar_arithmetic_including_leap_days():
    import datetime as dt

    from exmed_bert.convert.encode import ages_in_years
    from exmed_bert.data.dataset import UNKNOWN_BIRTH

    rng = np.random.default_rng(0)
    births = np.r_[rng.integers(-25000, 15000, 300), 11016, 11016, UNKNOWN_BIRTH].astype(np.int32)  # 2000-02-29
    days = np.r_[rng.integers(0, 20000, 300), 18686, 18687, 18000].astype(np.int32)  # 2021-02-28, 2021-03-01
    epoch = dt.date(1970, 1, 1)

    def age(b, d):
        if b == UNKNOWN_BIRTH:
            return 0
        b, d = epoch + dt.timedelta(int(b)), epoch + dt.timedelta(int(d))
        return min(max(d.year - b.year - ((d.month, d.day) < (b.month, b.day)), 0), 120)

    assert ages_in_years(births, days).tolist() == [age(b, d) for b, d in zip(births, days)]


def test_dataset_records_its_vocabulary_and_refuses_another(tmp_path):
    import json as _json

    from exmed_bert.convert.conversion import convert_patients
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.vocab import Vocab
    from exmed_bert.errors import UserError

    patients = [{"patient_id": f"P{i}", "birth_date": "1960-01-01", "sex": "F",
                 "diagnoses": [{"code": "E11.9" if i % 2 else "I10", "date": "2020-01-0%d" % (1 + i % 9)}]}
                for i in range(40)]
    src = tmp_path / "p.json"
    src.write_text(_json.dumps({"patients": patients}))
    convert_patients(src, tmp_path / "out" / "synthetic.pt")
    ds = PatientDataset.load(tmp_path / "out" / "synthetic_train.pt")
    vocab = Vocab.load(tmp_path / "out" / "vocab.json")
    ds.check_vocab(vocab)  # the matching vocabulary passes
    other = Vocab([*vocab.tokens, "icd10cm:Z00.00"])
    with pytest.raises(UserError, match="different vocabulary"):
        ds.check_vocab(other)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads the Linux memory map")
def test_loaded_tensors_live_in_the_memory_mapped_file_not_a_copy(tmp_path):
    """Datasets larger than RAM: every tensor's memory must be a mapping of the .pt file itself."""
    src = write(tmp_path / "in.jsonl", patients(60))
    convert_patients(src, tmp_path / "ds.pt", progress=False)
    path = (tmp_path / "ds_train.pt").resolve()
    ds = PatientDataset.load(path)
    with open("/proc/self/maps") as f:
        maps = [line.split() for line in f]
    for key in ("input_ids", "token_type_ids", "position_ids", "age_ids", "offsets", "sex"):
        ptr = ds.data[key].untyped_storage().data_ptr()
        owner = [m[-1] for m in maps if int(m[0].split("-")[0], 16) <= ptr < int(m[0].split("-")[1], 16)]
        assert owner and owner[0] == str(path), (key, owner)
