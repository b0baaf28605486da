"""The dataset and vocabulary layout: special tokens, token keys and day numbers, without torch.

`exmed_bert.data.dataset` and `exmed_bert.data.vocab` re-export these names. Conversion workers import
this module, not those two, so a worker process does not load torch (about 200 MB each).
"""

from __future__ import annotations

import datetime as dt

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


def day_to_iso(day: int) -> str:
    """A `days` / `birth_days` value as YYYY-MM-DD."""
    return dt.date.fromordinal(int(day) + EPOCH_ORDINAL).isoformat()
