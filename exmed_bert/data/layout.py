"""The dataset and vocabulary layout: special tokens, token keys and day numbers, without torch.

`exmed_bert.data.dataset` and `exmed_bert.data.vocab` re-export these names. Conversion workers import
this module, not those two, so a worker process does not load torch (about 200 MB each).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from exmed_bert.codes import SYSTEMS, token_type

# -- vocabulary ------------------------------------------------------------------------------------
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)
FIRST_CODE_ID = len(SPECIAL_TOKENS)
# token type of each system (1 diagnosis, 2 drug, 3 procedure), from the one list in exmed_bert.codes;
# "other:<family>//<code>" tokens (--other-codes keep) are type 4 (OTHER)
SYSTEM_TYPES = {system: token_type(system) for system in SYSTEMS}

# -- dataset ---------------------------------------------------------------------------------------
TOKEN_KEYS = ("input_ids", "token_type_ids", "position_ids", "age_ids", "days")
SEQ_KEYS = TOKEN_KEYS[:4]  # the per-token model inputs an item carries (`days` stays in the file)
PATIENT_KEYS = ("sex", "birth_days")
UNKNOWN_BIRTH = -(2 ** 31)  # birth_days of a patient without a birth date
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()  # days and birth_days count days since 1970-01-01
US_PER_DAY = 86_400_000_000  # MEDS times (prediction_time, event times) are microseconds since 1970-01-01


def day_to_iso(day: int) -> str:
    """A `days` / `birth_days` value as YYYY-MM-DD."""
    return dt.date.fromordinal(int(day) + EPOCH_ORDINAL).isoformat()


def time_to_iso(us: int) -> str:
    """A `prediction_times` value (microseconds since 1970-01-01) as ISO 8601 text (2020-03-05T12:00:00)."""
    return (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(us))).isoformat()


# -- the encoded dataset file ----------------------------------------------------------------------
FORMAT = "exmed-bert-dataset"
VERSION = 1
DTYPES = {"input_ids": np.int32, "token_type_ids": np.int8, "position_ids": np.int16, "age_ids": np.int16,
          "days": np.int32, "offsets": np.int64, "sex": np.int8, "birth_days": np.int32,
          "los_offsets": np.int64, "los_days": np.int16, "los_start_days": np.int32,
          "labels": np.int64, "prediction_days": np.int32, "prediction_times": np.int64}


def dataset_dict(parts: dict, patient_ids: list[str], labels=None, prediction_days=None,
                 prediction_times=None) -> dict:
    """The on-disk dict (docs/ARCHITECTURE.md, "Encoded dataset") with numpy arrays in the dtypes of
    DTYPES; `los_start_days` is included when `parts` has it (the conversion always does), and
    `prediction_times` (a task dataset of MEDS labels: each row's prediction time) when given. A value
    that is not an array (a data.ptfile.Chunks streamed from disk) is passed through as it is."""
    def arr(k, v):
        return np.ascontiguousarray(v, dtype=DTYPES[k]) if isinstance(v, (np.ndarray, list)) else v

    data = {"format": FORMAT, "version": VERSION}
    for k in ("input_ids", "token_type_ids", "position_ids", "age_ids", "days", "offsets", "sex", "birth_days",
              "los_offsets", "los_days", "los_start_days"):
        if k in parts:
            data[k] = arr(k, parts[k])
    if labels is not None:
        data["labels"] = arr("labels", np.asarray(labels))
        data["prediction_days"] = arr("prediction_days", np.asarray(prediction_days))
    if prediction_times is not None:
        data["prediction_times"] = arr("prediction_times", np.asarray(prediction_times))
    data["patient_ids"] = list(patient_ids)
    return data


# -- files beside a task ---------------------------------------------------------------------------
def risk_path(task_path: str | os.PathLike) -> Path:
    """Where a generated task's per-patient true risk lives: `<task stem>_risk.csv` beside the task CSV.
    The generator writes it; only the report's oracle reads it (never a model or a baseline)."""
    task_path = Path(task_path)
    return task_path.with_name(task_path.stem + "_risk.csv")


# -- MEDS subject ids ------------------------------------------------------------------------------
_ID_NUMBER = re.compile(r"\D*(\d+)")
INT64_MAX = 2 ** 63 - 1


def meds_subject_id(patient_id: str) -> int | None:
    """The MEDS subject id (int64) of one patient id: an integer id as it is, else letters then a number (the
    generator's P0042 -> 42, as its MEDS root writes it); None when it has none."""
    p = str(patient_id)
    if p.lstrip("-").isdigit() and str(int(p)) == p:
        return int(p) if -INT64_MAX - 1 <= int(p) <= INT64_MAX else None
    m = _ID_NUMBER.fullmatch(p)
    return int(m.group(1)) if m is not None and int(m.group(1)) <= INT64_MAX else None


def meds_subject_ids(patient_ids: Sequence[str]) -> list[int] | None:
    """MEDS subject ids for these patient ids (`meds_subject_id`), or None when one has none or two ids map
    to one number."""
    ids = [str(p) for p in patient_ids]
    numbers = [meds_subject_id(p) for p in ids]
    if any(n is None for n in numbers):
        return None
    by_number = dict(zip(numbers, ids))
    if any(by_number[n] != p for n, p in zip(numbers, ids)):   # two ids, one number: not a mapping
        return None
    return numbers
