"""MEDS code strings -> what they mean to the converter: an event of a code system, a patient fact, or
a code family that is ignored. Pure and table-driven; `MedsReader` calls it once per distinct code.

Three dialects are read (docs/DATASET.md, "MEDS code forms"):
  - this project's own: `ICD10CM//E11.65`, `ATC//N02BE01`, `GENDER//F`, `HOSPITAL_ADMISSION//...`
  - MIMIC-IV-MEDS: `DIAGNOSIS//ICD//10//E1165`, `PROCEDURE//ICD//9//3961`, `MEDICATION//...`
  - OMOP (meds_etl): `<vocabulary_id>/<concept_code>`, e.g. `ICD10CM/E11.65`, `RxNorm/860975`
"""

from __future__ import annotations

from typing import NamedTuple

from exmed_bert.codes import CodeError, normalize

EVENT_KINDS = ("diagnoses", "prescriptions", "procedures")

# "<PREFIX>//<code>": the converter's own dialect (prefix upper-cased before lookup).
DOUBLE_SLASH: dict[str, tuple[str, str]] = {
    "ICD10CM": ("diagnoses", "icd10cm"), "ICD9CM": ("diagnoses", "icd9cm"),
    "PHECODE": ("diagnoses", "phecode"), "ATC": ("prescriptions", "atc"),
    "RXNORM": ("prescriptions", "rxnorm"), "CPT": ("procedures", "cpt"),
    "ICD10PCS": ("procedures", "icd10pcs"), "ICD9PROC": ("procedures", "icd9proc"),
}
# MIMIC-IV-MEDS "<DIAGNOSIS|PROCEDURE>//ICD//<version>//<code>", codes written without dots.
MIMIC_ICD: dict[tuple[str, str], tuple[str, str]] = {
    ("DIAGNOSIS", "9"): ("diagnoses", "icd9cm"), ("DIAGNOSIS", "10"): ("diagnoses", "icd10cm"),
    ("PROCEDURE", "9"): ("procedures", "icd9proc"), ("PROCEDURE", "10"): ("procedures", "icd10pcs"),
}
# OMOP "<vocabulary_id>/<concept_code>" (vocabulary upper-cased before lookup). None = a known
# vocabulary that has no code system here: counted as ignored under its OMOP name. HCPCS stays
# ignored because its OMOP vocabulary holds only level II codes (J1234), which the cpt system rejects.
OMOP: dict[str, tuple[str, str] | None] = {
    "ICD10CM": ("diagnoses", "icd10cm"), "ICD9CM": ("diagnoses", "icd9cm"),
    "ICD10PCS": ("procedures", "icd10pcs"), "ICD9PROC": ("procedures", "icd9proc"),
    "RXNORM": ("prescriptions", "rxnorm"), "ATC": ("prescriptions", "atc"),
    "CPT4": ("procedures", "cpt"),
    "HCPCS": None, "SNOMED": None, "LOINC": None,
}
# Codes that carry a patient fact rather than an event: birth, sex and hospital stays.
BIRTH_CODES = {"MEDS_BIRTH"}
SEX_PREFIXES = {"GENDER"}            # "GENDER//F" (MEDS, MIMIC) and "Gender/F" (OMOP)
ADMISSION_PREFIXES = {"HOSPITAL_ADMISSION"}
DISCHARGE_PREFIXES = {"HOSPITAL_DISCHARGE"}
# OMOP (meds_etl) visits: `Visit/<concept_code>` at the visit start, with the visit end in the row's `end`
# column (meds_etl writes visit_end_datetime there). Inpatient visits become hospital stays; other
# visits (OP, ER, ...) are ignored under the family "Visit".
OMOP_VISIT = "VISIT"
INPATIENT_VISITS = {"IP", "ERIP"}   # OMOP Visit vocabulary: Inpatient Visit, Emergency Room and Inpatient Visit


class MedsCode(NamedTuple):
    """What one MEDS code string means.

    kind: "diagnoses" / "prescriptions" / "procedures" (an event), "birth", "sex", "admission",
          "discharge", "visit" (an OMOP inpatient visit: a stay from the row's time to its `end`), or
          "ignored".
    system: the exmed_bert.codes system of an event, else None.
    code: the normalised code of an event ("E11.65"), "F"/"M"/None for sex, else None.
    family: the code's family as counted in MedsReader.ignored: "ICD10CM", "DIAGNOSIS//ICD//10",
            "SNOMED", "LAB", or "ICD10CM (malformed)" for a malformed code of a known vocabulary.
    value: an event's code as written ("E1165"); the reader passes it on and the record validator
           normalises it again, as it does for JSON input, so rejects quote the input.
    """

    kind: str
    system: str | None
    code: str | None
    family: str
    value: str | None = None


def ignored(family: str) -> MedsCode:
    return MedsCode("ignored", None, None, family)


def _event(target: tuple[str, str], value: str, family: str) -> MedsCode:
    kind, system = target
    try:
        return MedsCode(kind, system, normalize(value, system), family, value)
    except CodeError:
        return ignored(f"{family} (malformed)")


def _sex(value: str, family: str) -> MedsCode:
    letter = value.strip()[:1].upper()
    return MedsCode("sex", None, letter if letter in ("F", "M") else None, family)


def other_code(code: str | None, m: MedsCode) -> MedsCode:
    """With `--other-codes keep`: an ignored code of no known system -> MedsCode("other", "other", text,
    family, text), where text is the token's "<family>//<rest>" ("LAB//50912//mg/dL" as written; OMOP's
    "SNOMED/4229881" -> "SNOMED//4229881"; "HR" -> "HR"). Anything else (events, facts, null codes,
    malformed codes of a known system) is returned unchanged."""
    if m.kind != "ignored" or code is None or m.family.endswith(" (malformed)"):
        return m
    if "//" not in code:
        vocab, sep, value = code.partition("/")
        if sep:
            code = f"{vocab}//{value}"
    return MedsCode("other", "other", code, m.family, code)


def parse_meds_code(code: str) -> MedsCode:
    """'DIAGNOSIS//ICD//10//E1165' -> MedsCode('diagnoses', 'icd10cm', 'E11.65', 'DIAGNOSIS//ICD//10').

    Never raises for a string: anything not recognised is MedsCode('ignored', ..., family) with the
    family being the part before the first separator ('LAB//RESULT//50813//mmol/L' -> 'LAB'), or the
    whole code when it has none ('HR').
    """
    if "//" in code:
        parts = code.split("//")
        head = parts[0].upper()
        if head in DOUBLE_SLASH:
            return _event(DOUBLE_SLASH[head], code[len(parts[0]) + 2:], head)
        if len(parts) == 4 and parts[1].upper() == "ICD":
            target = MIMIC_ICD.get((head, parts[2]))
            family = f"{head}//ICD//{parts[2]}"
            return _event(target, parts[3], family) if target else ignored(family)
        if head in SEX_PREFIXES:
            return _sex(parts[1], head)
        if head in ADMISSION_PREFIXES:
            return MedsCode("admission", None, None, head)
        if head in DISCHARGE_PREFIXES:
            return MedsCode("discharge", None, None, head)
        return ignored(parts[0])
    if code in BIRTH_CODES:
        return MedsCode("birth", None, None, code)
    vocab, sep, value = code.partition("/")
    if not sep:
        return ignored(code)
    head = vocab.upper()
    if head in OMOP:
        target = OMOP[head]
        return _event(target, value, head) if target else ignored(head)
    if head in SEX_PREFIXES:
        return _sex(value, head)
    if head == OMOP_VISIT and value.strip().upper() in INPATIENT_VISITS:
        return MedsCode("visit", None, None, vocab)
    return ignored(vocab)
