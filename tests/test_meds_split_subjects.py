"""A subject with rows in more than one MEDS shard (MEDS allows it) is one subject: read from the first shard
that holds it, counted apart, never a second record or a reject; the same with 1 and 2 workers."""

import json

from exmed_bert.data.dataset import PatientDataset
from exmed_bert.data.vocab import Vocab

from test_meds_label_rows import convert, tokens, write_shard


def test_a_subject_split_across_shards_is_one_record_read_from_its_first_shard(tmp_path, capsys):
    data = tmp_path / "meds" / "data"
    write_shard(data / "0.parquet", [(1, "1970-01-01", "MEDS_BIRTH"), (1, "2020-01-01", "ICD10CM//I10"),
                                     (3, "1975-01-01", "MEDS_BIRTH")])   # 3: no event in its first shard
    write_shard(data / "1.parquet", [(1, "2020-02-01", "ICD10CM//E1165"), (2, "1980-01-01", "MEDS_BIRTH"),
                                     (2, "2020-01-01", "ICD10CM//C50")])
    write_shard(data / "2.parquet", [(3, "2020-03-01", "ICD10CM//J45909"), (4, "1990-01-01", "MEDS_BIRTH"),
                                     (4, "2020-01-01", "ICD10CM//I10")])
    outs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        capsys.readouterr()
        assert convert(tmp_path / "meds", out / "m.pt", "--workers", workers) == 0
        line = capsys.readouterr().out
        man = json.loads((out / "dataset_manifest.json").read_text())
        # 4 subjects in the input: 4 records, not 6; only 3's lack of events in its first shard is a reject
        assert man["records"] == 4 and man["rejected"] == 1, (man["records"], man["reject_reasons"])
        assert man["reject_reasons"] == {"no diagnoses, prescriptions or procedures": 1}
        assert man["subjects_in_several_files"] == 2
        assert "2 subjects have rows in more than one shard" in line and "duplicate patient_id" not in line
        ds = PatientDataset.load(out / "m_train.pt")
        vocab = Vocab.load(out / "vocab.json")
        assert sorted(ds.patient_ids) == ["1", "2", "4"]
        assert tokens(ds, vocab, ds.patient_ids.index("1")) == ["[CLS]", "icd10cm:I10", "[SEP]"]   # shard 0's rows
        assert [json.loads(r)["patient_id"] for r in (out / "m_rejected.jsonl").read_text().splitlines()] == [3]
        outs[workers] = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".pt", ".json", ".jsonl")
                         and "run_config" not in p.name and "manifest" not in p.name}
    assert outs["1"] == outs["2"]   # byte-identical outputs whatever the workers
