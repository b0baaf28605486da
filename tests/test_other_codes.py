"""--other-codes {drop,keep}: codes of no known system (labs, SNOMED, MEDICATION//...) in JSON and MEDS input.

drop leaves them out, counts them per family and never rejects a patient for them; keep makes tokens
"other:<family>//<code>" of token type 4, the same from JSON and MEDS; models get a fifth token-type row.
"""

import datetime as dt
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import run_script
from exmed_bert.cli.convert import main as convert_main
from exmed_bert.convert.conversion import convert_patients
from exmed_bert.convert.validate import RecordParser
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.data.vocab import Vocab, type_of_token
from exmed_bert.errors import UserError

LABS = ("LAB//50912//mg/dL", "LAB//51222//g/dL", "MEDICATION//Heparin//Administered")


def patient_events(i: int) -> list[tuple[str, str]]:
    """(day, MEDS code) events of subject i, one code per 8-byte prefix per day (so in-visit order is fixed)."""
    ev = []
    for v in range(3):
        day = f"20{10 + v}-0{1 + i % 8}-1{i % 9}"
        ev += [(day, "ICD10CM//E1165" if i % 2 else "ICD10CM//I10"), (day, LABS[(i + v) % 3])]
        if v == 1:
            ev += [(day, "SNOMED/4229881"), (day, "ATC//N02BE01")]
    return ev


def write_meds(root, n):
    (root / "data").mkdir(parents=True)
    rows = []
    for i in range(n):
        rows += [(i, "1960-01-01", "MEDS_BIRTH"), (i, None, "GENDER//F" if i % 2 else "GENDER//M")]
        rows += [(i, d, c) for d, c in patient_events(i)]
    pq.write_table(pa.table({
        "subject_id": pa.array([r[0] for r in rows], pa.int64()),
        "time": pa.array([None if r[1] is None else dt.datetime.fromisoformat(r[1]) for r in rows], pa.timestamp("us")),
        "code": pa.array([r[2] for r in rows], pa.string())}), root / "data" / "0.parquet")


def json_patient(i: int) -> dict:
    """The JSON twin of MEDS subject i: other codes as events of their family's system (or "other")."""
    p = {"patient_id": str(i), "birth_date": "1960-01-01", "sex": "F" if i % 2 else "M",
         "diagnoses": [], "prescriptions": [], "procedures": []}
    for day, code in patient_events(i):
        head, _, rest = code.partition("//")
        if head == "ICD10CM":
            p["diagnoses"].append({"code": rest, "date": day, "system": "icd10cm"})
        elif head == "ATC":
            p["prescriptions"].append({"code": rest, "date": day, "system": "atc"})
        elif code.startswith("SNOMED/"):
            p["diagnoses"].append({"code": code.split("/")[1], "date": day, "system": "SNOMED"})
        elif head == "LAB":
            p["diagnoses"].append({"code": rest, "date": day, "system": "LAB"})
        else:  # the whole "<family>//<code>" under system "other"
            p["diagnoses"].append({"code": code, "date": day, "system": "other"})
    return p


def convert(src, out, *flags):
    assert convert_main(["--input", str(src), "--output", str(out), "--train-ratio", "0.999999", *flags]) == 0
    folder = out.parent
    return (json.loads((folder / "dataset_manifest.json").read_text()), Vocab.load(folder / "vocab.json"),
            PatientDataset.load(folder / f"{out.stem}_train.pt"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("other")
    write_meds(tmp / "meds", 12)
    (tmp / "p.json").write_text(json.dumps({"patients": [json_patient(i) for i in range(12)]}))
    return tmp


def test_keep_gives_the_same_other_tokens_of_type_4_from_json_and_meds(inputs, tmp_path):
    man_m, vocab_m, ds_m = convert(inputs / "meds", tmp_path / "m" / "d.pt", "--other-codes", "keep")
    man_j, vocab_j, ds_j = convert(inputs / "p.json", tmp_path / "j" / "d.pt", "--other-codes", "keep")
    assert vocab_m.tokens == vocab_j.tokens
    others = [t for t in vocab_m.tokens if t.startswith("other:")]
    assert others == sorted(["other:" + c for c in LABS] + ["other:SNOMED//4229881"])
    for key in ("input_ids", "token_type_ids", "position_ids", "age_ids"):
        assert torch.equal(ds_m.data[key], ds_j.data[key]), key
    ids = ds_m.data["input_ids"]
    is_other = torch.tensor([vocab_m.token(int(t)).startswith("other:") for t in ids])
    assert is_other.sum() == 12 * 4   # one lab per visit and one SNOMED code per patient
    assert set(ds_m.data["token_type_ids"][is_other].tolist()) == {4}
    assert set(ds_m.data["token_type_ids"][~is_other].tolist()) <= {0, 1, 2}
    assert vocab_m.type_vocab_size() == 5 and int(vocab_m.token_types().max()) == 4
    assert man_m["other_codes"] == man_j["other_codes"] == "keep" and man_m["args"]["other_codes"] == "keep"
    assert man_m["ignored_codes"] == {} and man_j["ignored_codes"] == {}
    assert man_m["meds_kept_codes"]["LAB"] == sum(c.startswith("LAB//") for i in range(12) for _, c in patient_events(i))


def test_drop_counts_other_codes_per_family_and_rejects_no_patient(inputs, tmp_path):
    man_m, vocab_m, ds_m = convert(inputs / "meds", tmp_path / "m" / "d.pt")  # drop is the default
    man_j, vocab_j, ds_j = convert(inputs / "p.json", tmp_path / "j" / "d.pt", "--other-codes", "drop")
    assert man_j["rejected"] == man_m["rejected"] == 0 and len(ds_j) == len(ds_m) == 12
    assert vocab_m.tokens == vocab_j.tokens and not any(t.startswith("other:") for t in vocab_j.tokens)
    assert vocab_j.type_vocab_size() == 4
    assert torch.equal(ds_m.data["input_ids"], ds_j.data["input_ids"])
    labs = sum(1 for i in range(12) for _, c in patient_events(i) if c.startswith("LAB//"))
    meds = sum(1 for i in range(12) for _, c in patient_events(i) if c.startswith("MEDICATION//"))
    assert man_j["ignored_codes"] == {"LAB": labs, "MEDICATION": meds, "SNOMED": 12}
    assert man_m["ignored_codes"] == man_m["meds_ignored_codes"] == {"LAB": labs, "MEDICATION": meds, "SNOMED": 12}
    assert man_j["other_codes"] == "drop"


def sha(folder):
    """File hashes; a manifest's without its args (which name the output folder)."""
    def data(p):
        return json.dumps({**json.loads(p.read_text()), "args": None}).encode() if p.name.endswith("manifest.json") \
            else p.read_bytes()
    return {p.name: hashlib.sha256(data(p)).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("mode", ["drop", "keep"])
def test_fast_and_per_record_jsonl_paths_stay_byte_identical(tmp_path, mode):
    pats = [json_patient(i) for i in range(30)]
    for p in pats[::3]:  # plain records (no system, no other code): the columnar path takes them
        p["diagnoses"] = [{"code": e["code"], "date": e["date"]} for e in p["diagnoses"] if e["system"] == "icd10cm"]
        p["prescriptions"] = [{"code": e["code"], "date": e["date"]} for e in p["prescriptions"]]
    pats[1]["diagnoses"].append({"code": "X", "date": "2012-01-01", "system": 5})  # still a malformed record
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in pats))
    mans = {fast: convert_patients(src, tmp_path / str(fast) / "ds.pt", fast=fast, progress=False, other_codes=mode)
            for fast in (True, False)}
    assert sha(tmp_path / "True") == sha(tmp_path / "False")
    assert mans[True]["rejected"] == 1 and mans[True]["ignored_codes"] == mans[False]["ignored_codes"]
    if mode == "drop":
        assert mans[True]["ignored_codes"]["LAB"] > 0


def test_parser_rules():
    rp = RecordParser(other_codes="keep")
    p = rp.parse({"patient_id": "a", "diagnoses": [
        {"code": "50912//mg/dL", "date": "2020-01-01", "system": "lab"},
        {"code": "lab//50912//mg/dL", "date": "2020-01-02", "system": "OTHER"},
        {"code": "x" * 200, "date": "2020-01-03", "system": "LAB"}]})
    assert [rp.tokens[t] for t in p.toks] == ["other:lab//50912//mg/dL"] * 2   # one token; case kept as written
    assert rp.ignored == {"LAB (too long)": 1}
    assert type_of_token("other:lab//50912//mg/dL") == 4 and type_of_token("icd10cm:E11.65") == 1
    with pytest.raises(ValueError, match="other_codes"):
        RecordParser(other_codes="maybe")
    with pytest.raises(UserError, match="--other-codes"):
        convert_patients("x.json", "/tmp/never.pt", other_codes="maybe")


def test_clinvec_and_baselines_take_other_tokens():
    from exmed_bert.baselines.runner import describe_token
    from exmed_bert.clinvec.match import match_tokens

    tokens = ["[PAD]", "icd10cm:E11.65", "other:LAB//50912//mg/dL", "other:SNOMED//4229881"]
    assert [m.source for m in match_tokens(tokens, {}, use_hierarchical_init=False)] == ["random"] * 3
    assert describe_token("other:LAB//50912//mg/dL") is None


def tiny(type_vocab_size=None):
    from exmed_bert.model.modeling import ExMedBertConfig

    kw = {} if type_vocab_size is None else {"type_vocab_size": type_vocab_size}
    return ExMedBertConfig(vocab_size=20, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=16, **kw)


def test_type_5_model_trains_and_loads_and_old_configs_still_load(tmp_path):
    from exmed_bert.model.modeling import ExMedBertForPreTraining, ExMedBertForSequenceClassification
    from exmed_bert.training.finetune import check_token_types

    torch.manual_seed(0)
    model = ExMedBertForPreTraining(tiny(5))
    ids = torch.tensor([[2, 7, 8, 3]])
    types = torch.tensor([[0, 1, 4, 0]])
    out = model(input_ids=ids, token_type_ids=types, attention_mask=torch.ones_like(ids),
                labels=torch.tensor([[-100, 7, 8, -100]]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.bert.embeddings.token_type_embeddings.weight.grad[4].abs().sum() > 0
    model.save_pretrained(tmp_path / "five")
    clf = ExMedBertForSequenceClassification.from_pretrained(tmp_path / "five", num_labels=2)
    assert clf.config.type_vocab_size == 5
    assert clf(input_ids=ids, token_type_ids=types, attention_mask=torch.ones_like(ids)).logits.shape == (1, 2)
    # a checkpoint from before: config.json written with the default 4 (or without the key) loads unchanged
    ExMedBertForPreTraining(tiny()).save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    assert cfg.pop("type_vocab_size") == 4
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    old = ExMedBertForSequenceClassification.from_pretrained(tmp_path / "old", num_labels=2)
    assert old.bert.embeddings.token_type_embeddings.num_embeddings == 4

    class DS:
        def __init__(self, types):
            self.data = {"token_type_ids": torch.tensor(types, dtype=torch.int8)}

    check_token_types({"train": DS([0, 1, 4])}, 5, tmp_path)
    with pytest.raises(UserError, match="token type 4.*4 token types"):
        check_token_types({"train": DS([0, 1, 3]), "val": DS([0, 4])}, 4, tmp_path)


def test_pretraining_sizes_the_type_table_from_the_vocabulary_and_finetunes(inputs, tmp_path):
    """End to end: a keep conversion (with a task) pretrains one step into a 5-type model that fine-tunes."""
    from exmed_bert.cli.finetune import main as finetune_main

    write_meds(tmp_path / "meds", 60)
    labels = [(i, i % 2) for i in range(60)]
    (tmp_path / "task.csv").write_text("patient_id,label\n" + "".join(f"{i},{y}\n" for i, y in labels))
    data = tmp_path / "data"
    assert convert_main(["--input", str(tmp_path / "meds"), "--output", str(data / "synthetic.pt"),
                         "--task-data", str(tmp_path / "task.csv"), "--other-codes", "keep",
                         "--split-source", "hash", "--train-ratio", "0.6"]) == 0
    p = run_script("pretrain-exmed-bert.py", "--data-dir", data, "--output-dir", tmp_path / "model",
                   "--model-size", "tiny", "--max-steps", "1", "--device", "cpu", "--save-steps", "1",
                   "--eval-steps", "1", cwd=tmp_path)
    best = tmp_path / "model" / "checkpoint-best"
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((best / "config.json").read_text())["type_vocab_size"] == 5
    assert finetune_main(["--model-path", str(best), "--data-dir", str(data), "--task-data", str(tmp_path / "task.csv"),
                          "--output-dir", str(tmp_path / "ft"), "--num-epochs", "1", "--batch-size", "8",
                          "--learning-rate", "1e-3", "--n-bootstrap", "10", "--device", "cpu"]) == 0
    assert (tmp_path / "ft" / "metrics.json").is_file()
    task = torch.load(data / "synthetic_task_train.pt", weights_only=True)
    assert int(np.max(np.asarray(task["token_type_ids"]))) == 4


def write_valued_meds(root, val_test_value: float):
    """20 subjects: 0-9 train, 10-14 tuning, 15-19 held_out (metadata/subject_splits.parquet). Each has one
    diagnosis and five LAB//1//mg/dL rows; train values are 1..50, val/test values all `val_test_value`."""
    (root / "data").mkdir(parents=True)
    (root / "metadata").mkdir()
    sid, time, code, value = [], [], [], []
    for s in range(20):
        for k in range(5):
            day = dt.datetime(2020, 1, 1 + k)
            sid += [s, s]
            time += [day, day]
            code += ["ICD10CM//I10", "LAB//1//mg/dL"]
            value += [None, float(s * 5 + k + 1) if s < 10 else val_test_value]
    pq.write_table(pa.table({"subject_id": pa.array(sid, pa.int64()), "time": pa.array(time, pa.timestamp("us")),
                             "code": code, "numeric_value": pa.array(value, pa.float32())}), root / "data" / "0.parquet")
    split = ["train"] * 10 + ["tuning"] * 5 + ["held_out"] * 5
    pq.write_table(pa.table({"subject_id": pa.array(range(20), pa.int64()), "split": split}),
                   root / "metadata" / "subject_splits.parquet")


def test_value_bins_learn_edges_on_the_train_split_only(tmp_path, monkeypatch):
    from exmed_bert.convert.meds import MedsReader
    from exmed_bert.convert.value_bins import learn_edges

    runs = {}
    for name, v in (("high", 1e6), ("low", -1e6)):
        write_valued_meds(tmp_path / name / "meds", v)
        out = tmp_path / name / "out" / "d.pt"
        assert convert_main(["--input", str(out.parents[1] / "meds"), "--output", str(out), "--other-codes", "keep",
                             "--value-bins", "4"]) == 0
        runs[name] = out.parent
    vocab = Vocab.load(runs["high"] / "vocab.json")
    assert [t for t in vocab.tokens if t.startswith("other:")] == [f"other:LAB//1//mg/dL|q{k}" for k in range(1, 5)]
    # val/test values far outside the train range change neither the edges nor anything built from train
    assert sha(runs["high"])["vocab.json"] == sha(runs["low"])["vocab.json"]
    assert sha(runs["high"])["d_train.pt"] == sha(runs["low"])["d_train.pt"]
    for name, top in (("high", "q4"), ("low", "q1")):
        for split in ("val", "test"):
            ds = PatientDataset.load(runs[name] / f"d_{split}.pt")
            labs = {vocab.token(int(t)) for t in ds.data["input_ids"] if vocab.token(int(t)).startswith("other:")}
            assert labs == {f"other:LAB//1//mg/dL|{top}"}, (name, split)
    man = json.loads((runs["high"] / "dataset_manifest.json").read_text())
    assert man["value_bins"]["bins"] == 4 and man["value_bins"]["codes_binned"] == 1
    train = PatientDataset.load(runs["high"] / "d_train.pt")
    counts = {k: sum(vocab.token(int(t)).endswith(f"|q{k}") for t in train.data["input_ids"]) for k in range(1, 5)}
    assert sorted(counts.values()) == [12, 12, 13, 13]   # 50 values in 4 quantile bins
    # task datasets built later from the vocabulary alone (no --other-codes / --value-bins given) bin the same way
    from exmed_bert.convert import ConvertArgs, build_task_datasets, vocab_settings

    (tmp_path / "task.csv").write_text("patient_id,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    args = ConvertArgs(input=str(tmp_path / "high" / "meds"), output=str(tmp_path / "task" / "t.pt"),
                       task_data=str(tmp_path / "task.csv"), split_source="meds", **vocab_settings(vocab))
    paths = build_task_datasets(args, runs["high"] / "vocab.json", progress=False)
    for split in ("train", "val"):
        ds = PatientDataset.load(paths[split])
        toks = [vocab.token(int(t)) for t in ds.data["input_ids"]]
        assert "[UNK]" not in toks and any(t.startswith("other:LAB//1//mg/dL|q") for t in toks)
    # streamed in batches of 3 rows (subjects cut by batch boundaries): the same files
    monkeypatch.setattr(MedsReader, "batch_rows", 3)
    out = tmp_path / "small" / "d.pt"
    assert convert_main(["--input", str(tmp_path / "high" / "meds"), "--output", str(out), "--other-codes", "keep",
                         "--value-bins", "4"]) == 0
    assert {k: v for k, v in sha(out.parent).items() if k.endswith((".pt", "vocab.json"))} == \
        {k: v for k, v in sha(runs["high"]).items() if k.endswith((".pt", "vocab.json"))}
    reader = MedsReader(tmp_path / "high" / "meds", other_codes="keep")
    edges = learn_edges(reader, lambda pid: int(pid) < 10, 4)
    np.testing.assert_allclose(edges["LAB//1//mg/dL"], np.quantile(np.arange(1, 51), [0.25, 0.5, 0.75]))


def test_reservoir_keeps_a_bounded_uniform_sample():
    from exmed_bert.convert.value_bins import Reservoir

    r = Reservoir(1000, np.random.default_rng(0))
    for chunk in np.array_split(np.arange(100_000, dtype=float), 37):
        r.add(chunk)
    assert len(r.values) == 1000 and r.seen == 100_000 and len(set(r.values)) == 1000
    assert 40_000 < np.median(r.values) < 60_000 and r.values.min() < 5_000 and r.values.max() > 95_000


def test_value_bins_need_keep_and_meds(inputs, tmp_path):
    with pytest.raises(UserError, match="--other-codes keep"):
        convert_patients(inputs / "meds", tmp_path / "a.pt", value_bins=4, progress=False)
    with pytest.raises(UserError, match="needs MEDS input"):
        convert_patients(inputs / "p.json", tmp_path / "b.pt", value_bins=4, other_codes="keep", progress=False)
    with pytest.raises(UserError, match="at least 2"):
        convert_patients(inputs / "meds", tmp_path / "c.pt", value_bins=1, other_codes="keep", progress=False)
