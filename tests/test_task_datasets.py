"""Task datasets beside a conversion (exmed_bert.convert.task_datasets): built with the conversion's own
settings, read back from its manifest (ConvertArgs as JSON), and reused only while those settings, the task
rows and the cut rule are the same."""

import dataclasses
import json

from exmed_bert.convert import ConvertArgs, convert_patients, task_datasets_for
from exmed_bert.convert import task_datasets
from exmed_bert.data.dataset import PatientDataset
from test_data_encode import ev, write


def history(i: int) -> dict:
    """A patient with 12 visits: 26 tokens with [CLS] and [SEP], more than max_length 10 keeps."""
    return {"patient_id": f"P{i}", "birth_date": "1960-05-05", "sex": "FM"[i % 2],
            "diagnoses": [ev(c, f"20{10 + k}-0{1 + i % 9}-01") for k in range(12) for c in ("E11.9", f"I{10 + k}")]}


def test_task_datasets_are_reused_while_the_settings_are_the_same_and_rebuilt_when_one_differs(tmp_path, monkeypatch):
    src = write(tmp_path / "in.jsonl", [history(i) for i in range(40)])
    convert_patients(src, tmp_path / "ds.pt", max_length=10, seed=3, train_ratio=0.6, progress=False)
    csv = tmp_path / "task.csv"
    csv.write_text("patient_id,label\n" + "".join(f"P{i},{i % 2}\n" for i in range(40)))
    builds = []
    real = task_datasets.build_task_datasets
    monkeypatch.setattr(task_datasets, "build_task_datasets", lambda args, *a, **kw: builds.append(args) or
                        real(args, *a, **kw))

    paths = task_datasets_for(tmp_path, csv)
    assert len(builds) == 1
    recorded = json.loads((tmp_path / "ds_task_manifest.json").read_text())["args"]
    expected = ConvertArgs(input=str(src), output=str(tmp_path / "ds.pt"), task_data=str(csv), max_length=10, seed=3,
                           train_ratio=0.6, split_source="hash")
    assert recorded == dataclasses.asdict(expected)   # the conversion's settings, the split source it decided
    assert max(PatientDataset.load(paths["train"]).lengths.tolist()) == 10   # max_length came from the manifest

    def record(**changes):
        manifest = json.loads((tmp_path / "ds_task_manifest.json").read_text())
        manifest["args"].update(changes)
        (tmp_path / "ds_task_manifest.json").write_text(json.dumps(manifest))

    assert task_datasets_for(tmp_path, csv) == paths and len(builds) == 1        # same settings: reused
    record(workers=4, input="/moved/in.jsonl")
    assert task_datasets_for(tmp_path, csv) == paths and len(builds) == 1        # neither changes the data
    record(max_length=512)
    task_datasets_for(tmp_path, csv)
    assert len(builds) == 2 and builds[-1].max_length == 10                      # rebuilt with the conversion's
    assert json.loads((tmp_path / "ds_task_manifest.json").read_text())["args"]["max_length"] == 10
    record(seed=4)
    task_datasets_for(tmp_path, csv)
    assert len(builds) == 3 and builds[-1].seed == 3
