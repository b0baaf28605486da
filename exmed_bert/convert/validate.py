"""Checks one patient record and turns it into flat event lists (day, provisional token id).

Every problem becomes a `Reject(reason)`; the converter decides whether to skip or stop. Codes are
normalised once per distinct (system, code) and dates parsed once per distinct string (dict caches),
so the per-event cost is two dict lookups.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from exmed_bert.codes import OTHER, OTHER_SYSTEM, CodeError, normalize, token_type
from exmed_bert.data.layout import EPOCH_ORDINAL, FIRST_CODE_ID, SPECIAL_TOKENS, SYSTEM_TYPES, UNKNOWN_BIRTH, day_to_iso

MAX_CODE_LENGTH = 32
# A hospital stay longer than this is implausible (Synthea writes 24,206-day stays): it is left out of the
# patient's stays (no PLOS label, no task cut) and counted in RecordParser.implausible_stays.
STAY_CAP_DAYS = 365
CATEGORIES = (("diagnoses", "icd10cm"), ("prescriptions", "atc"), ("procedures", "cpt"))
# --other-codes: what happens to an event whose system is none of SYSTEM_TYPES (a lab, a SNOMED concept):
# drop = left out and counted per family (RecordParser.ignored), keep = a token "other:<family>//<code>"
OTHER_CODES = ("drop", "keep")
MAX_OTHER_CODE_LENGTH = 128   # longer "other" codes are dropped and counted as "<family> (too long)"
_SEX = {"f": 1, "female": 1, "w": 1, "m": 2, "male": 2, "u": 0, "unknown": 0, "": 0}


class Reject(Exception):
    """A record that cannot be used; the message is the reason written to the rejects file."""


def parse_day(s: str) -> int:
    """'YYYY-MM-DD' (a time part after 'T' or ' ' is ignored) -> days since 1970-01-01; ValueError."""
    if len(s) > 10 and s[10] in "T ":
        s = s[:10]
    if len(s) != 10:
        raise ValueError(s)
    return _dt.date.fromisoformat(s).toordinal() - EPOCH_ORDINAL


def code_sort_key(code: str) -> int:
    """Order codes within a visit by their first 8 bytes (ties fall back to first-seen order)."""
    return int.from_bytes(code.encode("utf-8")[:8].ljust(8, b"\0"), "big") >> 1


@dataclass
class Parsed:
    patient_id: str
    sex: int
    birth_day: int
    days: list = field(default_factory=list)    # event days, all categories
    toks: list = field(default_factory=list)    # provisional token ids, parallel to days
    stays: list = field(default_factory=list)   # hospital length of stay in days
    stay_starts: list = field(default_factory=list)  # admission day of each stay (days since 1970), parallel
    # event times (microseconds since 1970, None unknown), parallel to days; None when no event has one.
    # Only a MEDS label's prediction time reads them (the MEDS reader writes them for task conversions)
    times: list | None = None


class RecordParser:
    """Validates patient dicts. Owns the provisional token table (ids 0..4 are the special tokens)."""

    def __init__(self, other_codes: str = "drop"):
        if other_codes not in OTHER_CODES:
            raise ValueError(f"other_codes must be one of {', '.join(OTHER_CODES)}, got {other_codes!r}")
        self.keep_other = other_codes == "keep"
        self.ignored: Counter = Counter()   # dropped other-code events of accepted-so-far records, per family
        self._dropped: list[str] = []       # families dropped in the record being parsed
        self.tokens: list[str] = list(SPECIAL_TOKENS)
        self.token_types: list[int] = [0] * FIRST_CODE_ID
        self.sort_keys: list[int] = [0] * FIRST_CODE_ID
        self._ids: dict[str, int] = {}
        self._by_raw: dict[tuple[str, str], int] = {}
        self._fast: dict[str, dict[str, int]] = {k: {} for k, _ in CATEGORIES}
        self._days: dict[str, int] = {}
        self._code_ok: dict[tuple[str, str], bool] = {}
        self.implausible_stays = 0   # stays over STAY_CAP_DAYS left out of accepted-so-far records
        # read events' "time" (Parsed.times): set with MEDS input and labels with prediction times (the MEDS
        # reader writes it); a JSON record's own "time" keys are not read
        self.read_times = False

    # -- pieces ------------------------------------------------------------------------------
    def day(self, value, what: str) -> int:
        d = self._days.get(value) if isinstance(value, str) else None
        if d is not None:
            return d
        if not isinstance(value, str):
            raise Reject(f"{what} must be a 'YYYY-MM-DD' string, got {type(value).__name__}")
        try:
            d = parse_day(value)
        except ValueError:
            raise Reject(f"bad date {value!r} in {what}") from None
        self._days[value] = d
        return d

    def day_or_none(self, value: str) -> int | None:
        """Like `day` for a string, but None instead of a Reject (the columnar path's check)."""
        d = self._days.get(value)
        if d is None:
            try:
                d = self._days[value] = parse_day(value)
            except ValueError:
                return None
        return d

    def code_ok(self, system: str, code: str) -> bool:
        """Whether `token(system, code)` would succeed, without creating the token (cached)."""
        key = (system, code)
        ok = self._code_ok.get(key)
        if ok is None:
            ok = key in self._by_raw
            if not ok and len(code) <= MAX_CODE_LENGTH:
                try:
                    normalize(code, system)
                    ok = True
                except CodeError:
                    pass
            self._code_ok[key] = ok
        return ok

    def token(self, system: str, code: str) -> int:
        key = (system, code)
        tid = self._by_raw.get(key)
        if tid is not None:
            return tid
        if len(code) > MAX_CODE_LENGTH:
            raise Reject(f"code too long ({len(code)} characters): {code[:40]!r}...")
        try:
            norm = normalize(code, system)
        except CodeError as e:  # a malformed code, not merely an unknown one
            raise Reject(f"unparseable {system} code {code!r}: {e}") from None
        text = f"{system}:{norm}"
        tid = self._ids.get(text)
        if tid is None:
            tid = self._ids[text] = len(self.tokens)
            self.tokens.append(text)
            self.token_types.append(int(token_type(system)))
            self.sort_keys.append(code_sort_key(norm))
        self._by_raw[key] = tid
        return tid

    def adopt(self, tokens: list[str], types: list[int], sort_keys: list[int]) -> np.ndarray:
        """This table's provisional ids [len(tokens)] int32 for another parser's token table (a worker's),
        adding the tokens it lacks."""
        lut = np.arange(len(tokens), dtype=np.int32)   # the special tokens are the same
        ids = self._ids
        for i in range(FIRST_CODE_ID, len(tokens)):
            tid = ids.get(tokens[i])
            if tid is None:
                tid = ids[tokens[i]] = len(self.tokens)
                self.tokens.append(tokens[i])
                self.token_types.append(types[i])
                self.sort_keys.append(sort_keys[i])
            lut[i] = tid
        return lut

    def other_token(self, text: str) -> int:
        """The provisional id of "other:<text>" (type OTHER), created on first use."""
        full = f"{OTHER_SYSTEM}:{text}"
        tid = self._ids.get(full)
        if tid is None:
            tid = self._ids[full] = len(self.tokens)
            self.tokens.append(full)
            self.token_types.append(OTHER)
            self.sort_keys.append(code_sort_key(text))
        return tid

    def _other_event(self, system: str, code: str, date, category: str) -> tuple[int, int] | None:
        """An event of no known system: (token, day) with --other-codes keep, else None (dropped and
        counted). System "other" carries the whole "<family>//<code>" in its code (the MEDS reader writes
        that); any other system name is the family: {"system": "LAB", "code": "50912//mg/dL"} is the
        token "other:LAB//50912//mg/dL", like MEDS's LAB//50912//mg/dL."""
        if system.lower() == OTHER_SYSTEM:
            text, family = code, code.split("//", 1)[0]
        else:
            text, family = f"{system}//{code}", system
        if not self.keep_other:
            self._dropped.append(family)
            return None
        if len(text) > MAX_OTHER_CODE_LENGTH:
            self._dropped.append(f"{family} (too long)")
            return None
        return self.other_token(text), self.day(date, f"{category} {code!r}")

    def _slow_event(self, e, category: str, default_system: str) -> tuple[int, int, int | None] | None:
        """(token, day, time or None) of an event that is not a plain cached {code, date}; None for a
        dropped other code. With `read_times`, an int `time` (microseconds since 1970, as the MEDS reader
        writes it) is the event's time, for a prediction-time cut; else it is unknown (None)."""
        if not isinstance(e, dict):
            raise Reject(f"{category} entries must be objects with code and date, got {type(e).__name__}")
        code, date, system = e.get("code"), e.get("date"), e.get("system", default_system)
        if code is None:
            raise Reject(f"{category} entry without a code")
        if not isinstance(code, str):
            raise Reject(f"{category} code must be text, got {type(code).__name__} {code!r}")
        if date is None:
            raise Reject(f"{category} entry {code!r} without a date")
        if system is None:
            system = default_system
        if not isinstance(system, str) or not system.strip():
            raise Reject(f"code system must be a name, got {system!r} in {category} (use one of "
                         f"{', '.join(SYSTEM_TYPES)}, or any other name for an other code)")
        time = e.get("time") if self.read_times else None
        if not isinstance(time, int) or isinstance(time, bool):
            time = None
        if system.lower() not in SYSTEM_TYPES:
            ev = self._other_event(system, code, date, category)
            return None if ev is None else (*ev, time)
        system = system.lower()
        day = self.day(date, f"{category} {code!r}")
        tid = self.token(system, code)
        if len(e) == 2 and system == default_system:
            self._fast[category][code] = tid
        return tid, day, time

    # -- one record --------------------------------------------------------------------------
    def parse(self, obj) -> Parsed:
        if not isinstance(obj, dict):
            raise Reject(f"a patient must be a JSON object, got {type(obj).__name__}")
        pid = obj.get("patient_id")
        if pid is None or pid == "":
            raise Reject("missing patient_id")
        if isinstance(pid, bool) or not isinstance(pid, (str, int)):
            raise Reject(f"patient_id must be text or an integer, got {type(pid).__name__}")
        pid = str(pid)
        sex = obj.get("sex")
        if sex is None:
            sex_id = 0
        elif isinstance(sex, str) and sex.strip().lower() in _SEX:
            sex_id = _SEX[sex.strip().lower()]
        else:
            raise Reject(f"unknown sex {sex!r} (use F, M or leave it out)")
        birth = obj.get("birth_date")
        birth_day = UNKNOWN_BIRTH if birth is None else self.day(birth, "birth_date")
        p = Parsed(pid, sex_id, birth_day)
        days, toks, dcache, times = p.days, p.toks, self._days, None
        if self._dropped:
            self._dropped.clear()   # left by a record that was rejected
        for category, default_system in CATEGORIES:
            events = obj.get(category)
            if not events:
                continue
            if not isinstance(events, list):
                raise Reject(f"{category} must be a list, got {type(events).__name__}")
            fast = self._fast[category]
            for e in events:
                try:  # fast path: {"code": ..., "date": ...} seen before
                    if len(e) != 2:
                        raise KeyError
                    tid = fast[e["code"]]
                    day = dcache[e["date"]]
                    time = None
                except (KeyError, TypeError):
                    ev = self._slow_event(e, category, default_system)
                    if ev is None:   # a dropped other code
                        continue
                    tid, day, time = ev
                if time is not None and times is None:
                    times = p.times = [None] * len(days)
                toks.append(tid)
                days.append(day)
                if times is not None:
                    times.append(time)
        if birth_day != UNKNOWN_BIRTH and days and min(days) < birth_day:
            raise Reject(f"birth_date {birth} is after the first event ({day_to_iso(min(days))})")
        stays = obj.get("hospitalizations")
        long_stays = 0
        if stays:
            if not isinstance(stays, list):
                raise Reject(f"hospitalizations must be a list, got {type(stays).__name__}")
            for h in stays:
                if not isinstance(h, dict):
                    raise Reject("hospitalizations entries must be objects with admission_date and discharge_date")
                a = self.day(h.get("admission_date"), "hospitalizations admission_date")
                d = self.day(h.get("discharge_date"), "hospitalizations discharge_date")
                if d < a:
                    raise Reject(f"discharge_date {h.get('discharge_date')} is before admission_date "
                                 f"{h.get('admission_date')}")
                if birth_day != UNKNOWN_BIRTH and a < birth_day:
                    raise Reject(f"birth_date {birth} is after a hospital admission ({h.get('admission_date')})")
                if d - a > STAY_CAP_DAYS:
                    long_stays += 1
                    continue
                p.stays.append(d - a)
                p.stay_starts.append(a)
        self.implausible_stays += long_stays
        if self._dropped:
            self.ignored.update(self._dropped)
            self._dropped.clear()
        return p
