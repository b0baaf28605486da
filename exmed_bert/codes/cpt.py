"""CPT: normalisation, a curated list of common codes and the numeric range categories.

No AMA descriptors anywhere (they are copyrighted): `describe` returns our own neutral label for the
range a code falls in. CPT has no parent chain; with include_groups, parents are the range ids.
"""

from __future__ import annotations

import re

from .common import CodeError, clean, group_key

SYSTEM = "cpt"
MAX_CHARS = 5
# Category I: five digits ("99213", "00100"). Category II/III and PLA: four digits + F, T or U.
_CODE_RE = re.compile(r"^[0-9]{4}[0-9FTU]$")

# (first, last, label), sections first, then the subsections inside them. Labels are ours.
RANGES: tuple[tuple[str, str, str], ...] = (
    ("00100", "01999", "Anesthesia"),
    ("10004", "69990", "Surgery"),
    ("70010", "79999", "Radiology"),
    ("80047", "89398", "Pathology and laboratory"),
    ("90281", "99199", "Medicine"),
    ("99500", "99607", "Medicine"),
    ("99202", "99499", "Evaluation and management"),
    ("0001F", "9999F", "Category II performance measure"),
    ("0001T", "9999T", "Category III emerging technology"),
    ("0001U", "9999U", "Proprietary laboratory analysis"),
    # Surgery
    ("10004", "19499", "Surgery: integumentary system"),
    ("20100", "29999", "Surgery: musculoskeletal system"),
    ("30000", "32999", "Surgery: respiratory system"),
    ("33016", "37799", "Surgery: cardiovascular system"),
    ("38100", "38999", "Surgery: hemic and lymphatic systems"),
    ("39000", "39599", "Surgery: mediastinum and diaphragm"),
    ("40490", "49999", "Surgery: digestive system"),
    ("50010", "53899", "Surgery: urinary system"),
    ("54000", "55899", "Surgery: male genital system"),
    ("56405", "58999", "Surgery: female genital system"),
    ("59000", "59899", "Surgery: maternity care and delivery"),
    ("60000", "60699", "Surgery: endocrine system"),
    ("61000", "64999", "Surgery: nervous system"),
    ("65091", "68899", "Surgery: eye and ocular adnexa"),
    ("69000", "69979", "Surgery: auditory system"),
    # Radiology
    ("70010", "76499", "Radiology: diagnostic imaging"),
    ("76506", "76999", "Radiology: diagnostic ultrasound"),
    ("77001", "77022", "Radiology: imaging guidance"),
    ("77046", "77067", "Radiology: breast imaging"),
    ("77071", "77092", "Radiology: bone and joint studies"),
    ("77261", "77799", "Radiology: radiation oncology"),
    ("78012", "79999", "Radiology: nuclear medicine"),
    # Pathology and laboratory
    ("80047", "80081", "Laboratory: organ or disease panel"),
    ("80143", "80377", "Laboratory: drug assay or drug testing"),
    ("81000", "81099", "Laboratory: urinalysis"),
    ("81105", "81479", "Laboratory: molecular pathology"),
    ("82009", "84999", "Laboratory: chemistry"),
    ("85002", "85999", "Laboratory: hematology and coagulation"),
    ("86000", "86849", "Laboratory: immunology"),
    ("86850", "86999", "Laboratory: transfusion medicine"),
    ("87003", "87999", "Laboratory: microbiology"),
    ("88104", "88199", "Laboratory: cytopathology"),
    ("88230", "88299", "Laboratory: cytogenetics"),
    ("88300", "88399", "Laboratory: surgical pathology"),
    # Medicine
    ("90281", "90399", "Medicine: immune globulins"),
    ("90460", "90474", "Medicine: immunization administration"),
    ("90476", "90759", "Medicine: vaccine or toxoid product"),
    ("90785", "90899", "Medicine: psychiatry"),
    ("90935", "90999", "Medicine: dialysis"),
    ("91010", "91299", "Medicine: gastroenterology"),
    ("92002", "92499", "Medicine: ophthalmology"),
    ("92502", "92700", "Medicine: otorhinolaryngology"),
    ("92920", "93799", "Medicine: cardiovascular"),
    ("93880", "93998", "Medicine: noninvasive vascular studies"),
    ("94002", "94799", "Medicine: pulmonary"),
    ("95004", "95199", "Medicine: allergy and clinical immunology"),
    ("95700", "96020", "Medicine: neurology and neuromuscular"),
    ("96105", "96146", "Medicine: central nervous system assessment"),
    ("96360", "96549", "Medicine: drug and chemotherapy administration"),
    ("97010", "97799", "Medicine: physical medicine and rehabilitation"),
    ("98925", "98929", "Medicine: osteopathic manipulation"),
    ("98940", "98943", "Medicine: chiropractic manipulation"),
    # Evaluation and management
    ("99202", "99215", "E/M office visit"),
    ("99221", "99239", "E/M hospital inpatient or observation care"),
    ("99242", "99255", "E/M consultation"),
    ("99281", "99288", "E/M emergency department visit"),
    ("99291", "99292", "E/M critical care"),
    ("99304", "99316", "E/M nursing facility care"),
    ("99341", "99350", "E/M home or residence visit"),
    ("99381", "99397", "E/M preventive medicine visit"),
    ("99401", "99429", "E/M preventive counseling"),
    ("99441", "99443", "E/M telephone service"),
    ("99460", "99463", "E/M newborn care"),
    ("99495", "99496", "E/M transitional care management"),
    ("99497", "99498", "E/M advance care planning"),
)
_RANGE_IDS = {f"{lo}-{hi}": label for lo, hi, label in RANGES}


def _span(first: str, last: str) -> list[str]:
    return [f"{n:05d}" for n in range(int(first), int(last) + 1)]


# Common codes seen in claims: visits, labs, imaging, ECG/echo, pulmonary tests, endoscopy,
# vaccines and their administration, injections, therapy, frequent procedures. Codes only.
COMMON_CODES: frozenset[str] = frozenset(
    _span("99202", "99205") + _span("99211", "99215")
    + _span("99221", "99223") + _span("99231", "99233") + ["99238", "99239"]
    + _span("99242", "99245") + _span("99252", "99255") + _span("99281", "99285")
    + ["99291", "99292"] + _span("99304", "99310") + ["99341", "99342", "99344", "99345"]
    + _span("99347", "99350") + _span("99381", "99387") + _span("99391", "99397")
    + _span("99401", "99404") + ["99406", "99407", "99441", "99442", "99443", "99483"]
    + ["99495", "99496", "99497", "99498"]
    # laboratory
    + ["80047", "80048", "80050", "80053", "80061", "80069", "80076", "81001", "81002", "81003",
       "81025", "82043", "82247", "82306", "82565", "82570", "82607", "82728", "82947", "83036",
       "83540", "83550", "83690", "83880", "84100", "84132", "84153", "84439", "84443", "84460",
       "84478", "84484", "84520", "84550", "84702", "85018", "85025", "85027", "85610", "85651",
       "85730", "86140", "86141", "86803", "87040", "87070", "87081", "87086", "87088", "87491",
       "87591", "87635", "87804", "87880", "88142", "88305", "36415"]
    # imaging
    + ["70450", "70551", "70553", "71045", "71046", "71250", "71260", "71275", "72100", "72148",
       "73030", "73560", "73562", "73721", "74176", "74177", "74178", "76700", "76705", "76770",
       "76805", "76830", "76856", "77065", "77066", "77067", "77080", "78452", "93880", "93970"]
    # cardiology, pulmonary, neurology, sleep
    + ["93000", "93005", "93010", "93015", "93224", "93306", "93307", "93458", "92928", "93656",
       "94010", "94060", "94640", "94660", "94729", "94760", "94761", "95810", "95811", "95819",
       "95886", "95910", "95911"]
    # endoscopy and frequent procedures
    + ["43235", "43239", "45378", "45380", "45385", "45330", "10060", "11042", "11102", "11721",
       "12001", "17000", "17110", "20552", "20610", "20611", "27130", "27447", "29881", "31500",
       "32551", "33208", "36430", "36556", "44970", "47562", "49505", "51702", "52000", "55700",
       "59400", "59510", "64483", "66984", "67028", "69210"]
    # anesthesia
    + ["00142", "00790", "00810", "01402", "01967"]
    # vaccines, injections, infusions, psychiatry, therapy, eye, hearing, allergy, dialysis
    + ["90460", "90461", "90471", "90472", "90662", "90670", "90677", "90686", "90715", "90732",
       "90746", "90750", "96372", "96365", "96413", "96127", "90791", "90792", "90832", "90834",
       "90837", "90853", "97110", "97112", "97116", "97140", "97161", "97162", "97163", "97530",
       "97535", "97750", "92004", "92012", "92014", "92083", "92134", "92250", "92557", "92567",
       "95004", "95165", "90935", "90937"]
    # category II performance measures (HbA1c and blood pressure levels, tobacco status)
    + ["3044F", "3046F", "3074F", "3075F", "1036F"]
)


def normalize(code: str) -> str:
    """' 0001f' -> '0001F'. Raises CodeError unless it is 5 digits or 4 digits + F/T/U."""
    s = clean(code, SYSTEM, MAX_CHARS)
    if not _CODE_RE.match(s):
        hint = " (leading zeros lost? CPT codes have 5 characters)" if s.isdigit() and len(s) < 5 else ""
        raise CodeError(
            f"malformed {SYSTEM} code {s!r}: expected 5 digits or 4 digits followed by F, T or U{hint}"
        )
    return s


def lookup_key(code: str) -> str:
    """A code (normalised) or a range id such as '99202-99215'."""
    return group_key(code) or normalize(code)


def _kind(code: str) -> str:
    """'F', 'T' or 'U' for category II/III/PLA codes, '0' for category I (all digits)."""
    return code[-1] if code[-1] in "FTU" else "0"


def _ranges_of(code: str) -> list[tuple[str, str, str]]:
    """The ranges holding `code`, narrowest first; only ranges of the code's own kind."""
    kind = _kind(code)
    hits = [(lo, hi, label) for lo, hi, label in RANGES if _kind(hi) == kind and lo <= code <= hi]
    return sorted(hits, key=lambda r: int(r[1].rstrip("FTU")) - int(r[0].rstrip("FTU")))


def parents(code: str, include_groups: bool = False) -> list[str]:
    """[] (CPT is flat); with include_groups the range ids, narrowest first: ['99202-99215', ...]."""
    key = lookup_key(code)
    if not include_groups or "-" in key:
        return []
    return [f"{lo}-{hi}" for lo, hi, _ in _ranges_of(key)]


def is_known(code: str) -> bool:
    key = lookup_key(code)
    return key in COMMON_CODES or key in _RANGE_IDS


def describe(code: str) -> str | None:
    """Our label of the narrowest range holding the code (never an AMA descriptor), or None."""
    key = lookup_key(code)
    if key in _RANGE_IDS:
        return _RANGE_IDS[key]
    hits = _ranges_of(key)
    return hits[0][2] if hits else None


def children(code: str) -> list[str]:
    lookup_key(code)  # still reject malformed input
    return []


def is_leaf(code: str) -> bool:
    return "-" not in lookup_key(code)


def leaves_under(code: str) -> list[str]:
    """Curated codes inside a range id ('99202-99215'); [code] for a curated code."""
    key = lookup_key(code)
    if "-" not in key:
        return [key] if key in COMMON_CODES else []
    lo, hi = key.split("-")
    return sorted(c for c in COMMON_CODES if _kind(c) == _kind(hi) and lo <= c <= hi)
