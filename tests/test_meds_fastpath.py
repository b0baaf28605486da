"""Issue 18 (scale): MEDS shards take a columnar path (exmed_bert.convert.meds_block). Every subject that
is not plainly valid is flagged and read by the per-record path, so the columnar conversion must write
exactly the files of the per-record one (fast=False), rejects, counts and manifest included, whatever the
data: malformed and over-long codes, missing and out-of-range times, births after events, duplicate
facts, stays that are open, unpaired, too long or before birth, time zones, text subject ids."""

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exmed_bert.convert import meds
from exmed_bert.convert.conversion import convert_patients

US_PER_DAY = 86_400_000_000


def us(s: str | None):
    return None if s is None else int((dt.datetime.fromisoformat(s) - dt.datetime(1970, 1, 1)).total_seconds()
                                      * 1_000_000)


def nasty_subjects():
    """(subject, rows) with rows (time as µs or None, code, end as µs or None), each subject one case."""
    base = [(us("1950-01-01"), "MEDS_BIRTH", None), (us("2000-01-01"), "GENDER//F", None)]
    ev = lambda d, c="ICD10CM//E11.65": (us(d), c, None)  # noqa: E731
    far = 10_500 * 365 * US_PER_DAY   # year ~12470: outside what a YYYY-MM-DD string holds
    cases = {
        "plain": base + [ev("2020-01-01"), ev("2020-01-01", "ATC//N02BE01"), ev("2020-02-01", "CPT//99214")],
        "ties": base + [ev("2020-01-01", "ICD10PCS//0QS734Z"), ev("2020-01-01", "ICD10PCS//0QS734Y"),
                        ev("2020-01-01", "ICD10PCS//0QS7341"), ev("2020-01-01", "ICD10CM//E11.65")],
        "mimic": base + [ev("2020-01-01", "DIAGNOSIS//ICD//10//E1165"), ev("2020-01-02", "DIAGNOSIS//ICD//9//4019"),
                         ev("2020-01-03", "PROCEDURE//ICD//10//0QS734Z"), ev("2020-01-03", "LAB//50912//mg/dL")],
        "omop": base + [ev("2020-01-01", "ICD10CM/E11.65"), ev("2020-01-01", "RxNorm/860975"),
                        ev("2020-01-02", "SNOMED/4229881"), (us("2020-03-01"), "Visit/IP", us("2020-03-04")),
                        (us("2020-04-01"), "Visit/IP", None), (us("2020-05-01"), "Visit/OP", us("2020-05-01"))],
        "malformed": base + [ev("2020-01-01"), ev("2020-01-02", "ICD10CM//E1"), ev("2020-01-02", "ICD10CM//")],
        "null event time": base + [ev("2020-01-01"), (None, "ATC//N02BE01", None)],
        "far event time": base + [ev("2020-01-01"), (far, "ATC//N02BE01", None)],
        "null birth": [(None, "MEDS_BIRTH", None), ev("2020-01-01")],
        "far birth": [(far, "MEDS_BIRTH", None), ev("2020-01-01")],
        "birth after event": [(us("2021-01-01"), "MEDS_BIRTH", None), ev("2020-01-01")],
        "two births": [(us("1950-01-01"), "MEDS_BIRTH", None), (us("1960-01-01"), "MEDS_BIRTH", None),
                       ev("2020-01-01")],
        "two sexes": base + [(us("2001-01-01"), "GENDER//M", None), ev("2020-01-01")],
        "odd sex": [(us("2000-01-01"), "GENDER//X", None), ev("2020-01-01")],
        "stay": base + [ev("2020-03-02"), (us("2020-03-01"), "HOSPITAL_ADMISSION//IP", None),
                        (us("2020-03-05"), "HOSPITAL_DISCHARGE//HOME", None)],
        "two stays": base + [ev("2020-03-02"), (us("2020-03-01"), "HOSPITAL_ADMISSION//IP", None),
                             (us("2020-03-03"), "HOSPITAL_ADMISSION//IP", None),
                             (us("2020-03-05"), "HOSPITAL_DISCHARGE//HOME", None),
                             (us("2020-03-09"), "HOSPITAL_DISCHARGE//HOME", None)],
        "open stay": base + [ev("2020-03-02"), (us("2020-03-01"), "HOSPITAL_ADMISSION//IP", None)],
        "unpaired discharge": base + [ev("2020-03-02"), (us("2020-03-05"), "HOSPITAL_DISCHARGE//HOME", None)],
        "null admission": base + [ev("2020-03-02"), (None, "HOSPITAL_ADMISSION//IP", None),
                                  (us("2020-03-05"), "HOSPITAL_DISCHARGE//HOME", None)],
        "long stay": base + [ev("2020-03-02"), (us("2010-03-01"), "HOSPITAL_ADMISSION//IP", None),
                             (us("2020-03-05"), "HOSPITAL_DISCHARGE//HOME", None)],
        "stay before birth": [(us("2010-01-01"), "MEDS_BIRTH", None), ev("2020-03-02"),
                              (us("2009-03-01"), "Visit/IP", us("2010-03-01"))],
        "reversed visit": base + [ev("2020-03-02"), (us("2020-03-09"), "Visit/IP", us("2020-03-01"))],
        "far visit end": base + [ev("2020-03-02"), (us("2020-03-09"), "Visit/IP", far)],
        "only labs": base + [ev("2020-01-01", "LAB//glucose"), ev("2020-01-02", "LAB//sodium")],
        "long other code": base + [ev("2020-01-01"), ev("2020-01-01", "LAB//" + "x" * 200)],
        "late night": base + [(us("2020-01-01T23:30:00"), "ICD10CM//E11.65", None),
                              (us("2020-01-02T00:30:00"), "ATC//N02BE01", None)],
        # around a prediction time of 2020-03-04T12:00 (labels_at_noon): before, at, after it that day, and a
        # stay admitted that morning
        "prediction day": base + [ev("2020-03-01"), (us("2020-03-04T08:00:00"), "ICD10CM//I10", None),
                                  (us("2020-03-04T12:00:00"), "ATC//N02BE01", None),
                                  (us("2020-03-04T20:00:00"), "CPT//99214", None),
                                  (us("2020-03-04T09:00:00"), "HOSPITAL_ADMISSION//IP", None),
                                  (us("2020-03-06T10:00:00"), "HOSPITAL_DISCHARGE//HOME", None)],
        "prediction day, flagged": base + [(us("2020-03-04T08:00:00"), "ICD10CM//I10", None),
                                           (us("2020-03-04T20:00:00"), "CPT//99214", None),
                                           # a stay over the cap: the per-record path
                                           (us("2010-03-01"), "HOSPITAL_ADMISSION//IP", None),
                                           (us("2020-03-05"), "HOSPITAL_DISCHARGE//HOME", None)],
    }
    return list(cases.values())


def write_fixture(root, subjects, *, text_ids=False, tz=None, shards=2, values=False):
    """A MEDS root: subjects spread over `shards` files sorted by subject_id (rows shuffled in time)."""
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True)
    per = -(-len(subjects) // shards)
    for k in range(shards):
        rows = []
        for j, subject_rows in enumerate(subjects[k * per:(k + 1) * per]):
            sid = k * per + j + 1000
            order = rng.permutation(len(subject_rows))
            rows += [(sid, *subject_rows[i]) for i in order]
        ids = [f"S{r[0]}" if text_ids else r[0] for r in rows]
        table = pa.table({"subject_id": pa.array(ids, pa.string() if text_ids else pa.int64()),
                          "time": pa.array([r[1] for r in rows], pa.timestamp("us", tz=tz)),
                          "code": pa.array([r[2] for r in rows], pa.string()),
                          "end": pa.array([r[3] for r in rows], pa.timestamp("us", tz=tz)),
                          "numeric_value": pa.array([float(rng.normal()) if values else None for _ in rows],
                                                    pa.float32())})
        pq.write_table(table, root / "data" / f"{k}.parquet")
    return root


def labels_at_noon(path, subject_ids, text_ids=False):
    """A MEDS label file: four subjects of five, prediction_time 2020-03-04T12:00 for two of three of
    them and midnight of that day for the rest; every fourth has a second row, 2020-03-02T06:00."""
    rows = [(i, "2020-03-04T12:00:00" if i % 3 else "2020-03-04") for i in range(len(subject_ids)) if i % 5 != 4]
    rows += [(i, "2020-03-02T06:00:00") for i in range(len(subject_ids)) if i % 4 == 1]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "subject_id": pa.array([f"S{subject_ids[i]}" if text_ids else subject_ids[i] for i, _ in rows],
                               pa.string() if text_ids else pa.int64()),
        "prediction_time": pa.array([us(t) for _, t in rows], pa.timestamp("us")),
        "boolean_value": pa.array([bool((i + len(t)) % 4 // 2) for i, t in rows])}), path)
    return path


def outputs(folder):
    """Every file a conversion wrote, with the manifest's args and its output path left out."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.name.endswith("manifest.json"):
            m = json.loads(f.read_text())
            m.pop("args", None)
            out[f.name] = m
        elif f.is_file():
            out[f.name] = f.read_bytes()
    return out


@pytest.mark.parametrize("variant", ["int ids", "text ids", "time zone", "keep", "value bins", "small batches",
                                     "meds labels"])
def test_columnar_meds_path_writes_the_per_record_files(tmp_path, monkeypatch, variant):
    subjects = nasty_subjects() * 3   # several subjects per case, spread over both shards
    root = write_fixture(tmp_path / "meds", subjects, text_ids=variant == "text ids",
                         tz="America/New_York" if variant == "time zone" else None, values=variant == "value bins")
    if variant == "small batches":
        monkeypatch.setattr(meds.MedsReader, "batch_rows", 7)
    keep = variant in ("keep", "value bins")
    task = tmp_path / "task.csv"
    task.write_text("patient_id,label,prediction_date\n" + "".join(
        f"{'S' if variant == 'text ids' else ''}{1000 + i},{i % 2},{'2020-03-04' if i % 3 else ''}\n"
        for i in range(0, len(subjects), 2)))
    if variant == "meds labels":   # prediction times: the prediction day's events before the time are kept
        task = labels_at_noon(tmp_path / "labels" / "task.parquet", list(range(1000, 1000 + len(subjects))))
    flagged = []
    real = meds.MedsBlock.record
    monkeypatch.setattr(meds.MedsBlock, "record", lambda self, i: flagged.append(i) or real(self, i))
    files = {}
    for fast in (False, True):
        out = tmp_path / str(fast)
        convert_patients(root, out / "ds.pt", task_data=task, fast=fast, progress=False,
                         other_codes="keep" if keep else "drop", value_bins=3 if variant == "value bins" else 0,
                         train_ratio=0.5)
        files[fast] = outputs(out)
    assert files[True].keys() == files[False].keys()
    for name in files[False]:
        assert files[True][name] == files[False][name], name
    assert flagged, "no subject took the per-record path: the fixture lost its bad cases"
    man = files[True]["dataset_manifest.json"]
    assert man["splits"]["train"]["patients"] > 10 and man["rejected"] > 5
