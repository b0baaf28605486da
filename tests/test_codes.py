"""Tests for exmed_bert.codes: normalisation, parents, rejection, known vs unknown, per system."""

import pytest

from exmed_bert import codes
from exmed_bert.codes import CodeError, atc


# ---------------------------------------------------------------- shared behaviour

def test_systems_and_token_types():
    assert codes.SYSTEMS == ("icd10cm", "icd9cm", "atc", "cpt", "rxnorm", "phecode", "icd10pcs", "icd9proc")
    assert [codes.token_type(s) for s in codes.SYSTEMS] == [1, 1, 2, 3, 2, 1, 3, 3]


@pytest.mark.parametrize("call", [
    lambda: codes.normalize("E11", "icd10"),
    lambda: codes.parents("E11", "ICD-10"),
    lambda: codes.is_known("E11", "snomed"),
    lambda: codes.is_valid("E11", None),
    lambda: codes.token_type("loinc"),
])
def test_unknown_system_lists_valid_systems(call):
    with pytest.raises(CodeError, match="valid systems: icd10cm, icd9cm, atc, cpt, rxnorm, phecode, icd10pcs, icd9proc"):
        call()


@pytest.mark.parametrize("system", codes.SYSTEMS)
@pytest.mark.parametrize("bad, reason", [
    (None, "must be a str, got NoneType"),
    (250, "must be a str, got int"),
    (b"E11", "must be a str, got bytes"),
    ("", "empty"),
    ("   ", "empty"),
    ("9" * 10_000, "too long"),
])
def test_every_system_rejects_non_str_empty_and_overlong(system, bad, reason):
    with pytest.raises(CodeError, match=reason):
        codes.normalize(bad, system)
    assert not codes.is_valid(bad, system)
    assert not codes.is_known(bad, system)


def test_code_error_is_a_value_error():
    assert issubclass(CodeError, ValueError)


# ---------------------------------------------------------------- ICD-10-CM

@pytest.mark.parametrize("raw, expected", [
    ("E1165", "E11.65"), ("e11.65", "E11.65"), ("  E11.65\n", "E11.65"), ("E11", "E11"),
    ("I10", "I10"), ("S52521A", "S52.521A"), ("t360x1a", "T36.0X1A"), ("C4A0", "C4A.0"),
    ("QA00", "QA0.0"), ("U0999", "U09.99"),
])
def test_icd10cm_normalize(raw, expected):
    assert codes.normalize(raw, "icd10cm") == expected


@pytest.mark.parametrize("bad", ["E1", "E11.", "E.1165", "11E", "EEE", "E11-65", "E11 65",
                                 "E08-E13", "É11", "E11..6"])
def test_icd10cm_rejects_bad_shape(bad):
    with pytest.raises(CodeError, match="malformed icd10cm"):
        codes.normalize(bad, "icd10cm")


def test_icd10cm_rejects_overlong():
    with pytest.raises(CodeError, match=r"too long \(9 characters, at most 8\)"):
        codes.normalize("E11.65432", "icd10cm")


def test_icd10cm_parents():
    assert codes.parents("E11.65", "icd10cm") == ["E11.6", "E11"]
    assert codes.parents("E1165", "icd10cm", include_groups=True) == ["E11.6", "E11", "E08-E13", "E00-E89"]
    assert codes.parents("E11", "icd10cm") == []
    assert codes.parents("T36.0X1A", "icd10cm") == ["T36.0X1", "T36.0X", "T36.0", "T36"]
    # A single-category block gets a range id so it never collides with its category.
    assert codes.parents("B10.01", "icd10cm", include_groups=True) == ["B10.0", "B10", "B10-B10", "A00-B99"]
    assert codes.parents("E08-E13", "icd10cm", include_groups=True) == ["E00-E89"]


def test_icd10cm_unknown_but_well_formed_code_gets_truncation_parents():
    code = codes.normalize("E116Z9", "icd10cm")
    assert code == "E11.6Z9"
    assert codes.is_valid(code, "icd10cm") and not codes.is_known(code, "icd10cm")
    assert codes.describe(code, "icd10cm") is None
    assert codes.parents(code, "icd10cm", include_groups=True) == ["E11.6Z", "E11.6", "E11", "E08-E13", "E00-E89"]
    # An unknown category still finds its block (or, between blocks, its chapter) by range.
    assert not codes.is_known("E12", "icd10cm") and not codes.is_known("E14", "icd10cm")
    assert codes.parents("E12.9", "icd10cm", include_groups=True) == ["E12", "E08-E13", "E00-E89"]
    assert codes.parents("E14.9", "icd10cm", include_groups=True) == ["E14", "E00-E89"]


def test_icd10cm_table_lookups():
    assert codes.is_known("E11.65", "icd10cm") and codes.is_known("e1165", "icd10cm")
    assert codes.is_known("E08-E13", "icd10cm") and codes.is_known("A00-B99", "icd10cm")
    assert codes.describe("E11.65", "icd10cm") == "Type 2 diabetes mellitus with hyperglycemia"
    assert codes.describe("E08-E13", "icd10cm") == "Diabetes mellitus"
    assert codes.describe("I10", "icd10cm") == "Essential (primary) hypertension"
    assert codes.children("E08-E13", "icd10cm") == ["E08", "E09", "E10", "E11", "E13"]
    assert codes.children("E11.6", "icd10cm")[:2] == ["E11.61", "E11.62"]
    assert codes.children("E11.65", "icd10cm") == []
    assert codes.is_leaf("E11.65", "icd10cm") and codes.is_leaf("I10", "icd10cm")
    assert not codes.is_leaf("E11", "icd10cm") and not codes.is_leaf("E11.6Z9", "icd10cm")


def test_icd10cm_covers_every_chapter():
    chapters = ["A00-B99", "C00-D49", "D50-D89", "E00-E89", "F01-F99", "G00-G99", "H00-H59", "H60-H95",
                "I00-I99", "J00-J99", "K00-K95", "L00-L99", "M00-M99", "N00-N99", "O00-O9A", "P00-P96",
                "Q00-QA0", "R00-R99", "S00-T88", "V00-Y99", "Z00-Z99", "U00-U85"]
    for chapter in chapters:
        assert codes.is_known(chapter, "icd10cm"), chapter
        assert codes.parents(chapter, "icd10cm", include_groups=True) == []
        assert codes.leaves_under(chapter, "icd10cm"), chapter


def test_icd10cm_leaves_under():
    leaves = codes.leaves_under("E11", "icd10cm")
    assert "E11.65" in leaves and "E11.9" in leaves and "E11.6" not in leaves
    assert all(codes.is_leaf(c, "icd10cm") and c.startswith("E11.") for c in leaves)
    assert codes.leaves_under("E11.65", "icd10cm") == ["E11.65"]
    assert codes.leaves_under("E11.6Z9", "icd10cm") == []
    block = codes.leaves_under("E08-E13", "icd10cm")
    assert set(leaves) < set(block) and "E10.9" in block


# ---------------------------------------------------------------- ATC

@pytest.mark.parametrize("raw, expected", [
    ("n02be01", "N02BE01"), (" A10BA02 ", "A10BA02"), ("N", "N"), ("c09", "C09"), ("C09A", "C09A"),
    ("C09AA", "C09AA"),
])
def test_atc_normalize(raw, expected):
    assert codes.normalize(raw, "atc") == expected


@pytest.mark.parametrize("bad, reason", [
    ("N02BE1", "shapes"), ("N2", "shapes"), ("N02B0", "shapes"), ("N02BE01X", "too long"),
    ("02BE01", "shapes"), ("X02BE01", "anatomical main group"), ("N02.BE01", "too long"), ("N02BEA1", "shapes"),
])
def test_atc_rejects_bad_shape(bad, reason):
    with pytest.raises(CodeError, match=reason):
        codes.normalize(bad, "atc")


def test_atc_parents_and_levels():
    assert codes.parents("N02BE01", "atc") == ["N02BE", "N02B", "N02", "N"]
    assert codes.parents("N02BE01", "atc", include_groups=True) == ["N02BE", "N02B", "N02", "N"]
    assert codes.parents("C09A", "atc") == ["C09", "C"]
    assert codes.parents("N", "atc") == []
    assert codes.parents("A10BX99", "atc") == ["A10BX", "A10B", "A10", "A"]  # unknown, well-formed
    assert [atc.level(c) for c in ["N", "N02", "N02B", "N02BE", "N02BE01"]] == [1, 2, 3, 4, 5]
    assert atc.LEVEL_NAMES[5] == "chemical substance"


def test_atc_table():
    expected = {"A10BA02": "metformin", "C09AA02": "enalapril", "N02BE01": "paracetamol",
                "C10AA05": "atorvastatin", "B01AF02": "apixaban", "R03BB04": "tiotropium bromide",
                "H03AA01": "levothyroxine sodium", "A02BC01": "omeprazole", "N06AB06": "sertraline"}
    for code, name in expected.items():
        assert atc.SUBSTANCES[code] == name
        assert codes.describe(code, "atc") == name
    assert len(atc.SUBSTANCES) >= 400
    assert codes.describe("C10AA", "atc") == "HMG CoA reductase inhibitors"
    assert codes.describe("A", "atc") == "Alimentary tract and metabolism"
    assert not codes.is_known("A10BX99", "atc") and codes.is_valid("A10BX99", "atc")


def test_atc_every_substance_has_all_ancestors():
    for code in atc.SUBSTANCES:
        for parent in codes.parents(code, "atc"):
            assert codes.is_known(parent, "atc"), (code, parent)
            assert codes.describe(parent, "atc")


def test_atc_children_and_leaves():
    assert codes.children("A10BK", "atc") == ["A10BK01", "A10BK02", "A10BK03", "A10BK04"]
    assert "A10B" in codes.children("A10", "atc")
    assert codes.children("N02BE01", "atc") == []
    leaves = codes.leaves_under("C10A", "atc")
    assert "C10AA05" in leaves and "C10AX09" in leaves and all(len(c) == 7 for c in leaves)
    assert codes.is_leaf("N02BE01", "atc") and not codes.is_leaf("N02BE", "atc")


# ---------------------------------------------------------------- CPT

@pytest.mark.parametrize("raw, expected", [("99213", "99213"), (" 00100 ", "00100"), ("3044f", "3044F"),
                                           ("0042T", "0042T"), ("0001U", "0001U")])
def test_cpt_normalize(raw, expected):
    assert codes.normalize(raw, "cpt") == expected


@pytest.mark.parametrize("bad, reason", [("9921", "leading zeros lost"), ("992134", "too long"),
                                         ("9921A", "expected 5 digits"), ("A9921", "expected 5 digits"),
                                         ("J1100", "expected 5 digits")])
def test_cpt_rejects_bad_shape(bad, reason):
    with pytest.raises(CodeError, match=reason):
        codes.normalize(bad, "cpt")


def test_cpt_is_flat_with_range_groups():
    assert codes.parents("99213", "cpt") == []
    assert codes.parents("99213", "cpt", include_groups=True) == ["99202-99215", "99202-99499"]
    assert codes.parents("83036", "cpt", include_groups=True) == ["82009-84999", "80047-89398"]
    assert codes.children("99213", "cpt") == []


def test_cpt_describe_gives_range_labels_only():
    assert codes.describe("99213", "cpt") == "E/M office visit"
    assert codes.describe("83036", "cpt") == "Laboratory: chemistry"
    assert codes.describe("93000", "cpt") == "Medicine: cardiovascular"
    assert codes.describe("00100", "cpt") == "Anesthesia"
    assert codes.describe("3044F", "cpt") == "Category II performance measure"
    assert codes.describe("99202-99499", "cpt") == "Evaluation and management"
    assert codes.describe("99999", "cpt") is None  # well-formed, outside every range


def test_cpt_known_codes():
    for code in ["99202", "99215", "83036", "80061", "80053", "85025", "84443", "81001", "93000",
                 "93306", "94010", "45378", "77067", "90471"]:
        assert codes.is_known(code, "cpt"), code
    assert not codes.is_known("99216", "cpt") and codes.is_valid("99216", "cpt")
    assert codes.leaves_under("99202-99215", "cpt") == [
        "99202", "99203", "99204", "99205", "99211", "99212", "99213", "99214", "99215"]


# ---------------------------------------------------------------- ICD-9-CM

@pytest.mark.parametrize("raw, expected", [("25002", "250.02"), ("250.02", "250.02"), ("250", "250"),
                                           ("v4581", "V45.81"), ("E8490", "E849.0"), ("4019", "401.9")])
def test_icd9cm_normalize(raw, expected):
    assert codes.normalize(raw, "icd9cm") == expected


@pytest.mark.parametrize("bad, reason", [("8.45", "did you mean '008.45'"), ("250.123", "too long"),
                                         ("E84", "malformed"), ("V4", "malformed"), ("A01", "malformed"),
                                         ("E849.01", "too long"), ("250.", "malformed")])
def test_icd9cm_rejects_bad_shape(bad, reason):
    with pytest.raises(CodeError, match=reason):
        codes.normalize(bad, "icd9cm")


def test_icd9cm_parents_by_truncation():
    assert codes.parents("250.02", "icd9cm") == ["250.0", "250"]
    assert codes.parents("250.02", "icd9cm", include_groups=True) == ["250.0", "250", "240-279"]
    assert codes.parents("V45.81", "icd9cm", include_groups=True) == ["V45.8", "V45", "V01-V91"]
    assert codes.parents("E849.0", "icd9cm", include_groups=True) == ["E849", "E000-E999"]
    assert codes.parents("001", "icd9cm", include_groups=True) == ["001-139"]
    assert not codes.is_known("250.02", "icd9cm")  # no code table ships
    assert codes.describe("240-279", "icd9cm").startswith("Endocrine")


# ---------------------------------------------------------------- phecode

@pytest.mark.parametrize("raw, expected", [("008", "8.0"), ("8", "8.0"), ("8.0", "8.0"), ("250.2", "250.2"),
                                           ("250.21", "250.21"), ("008.50", "8.5"), (" 250 ", "250.0"),
                                           ("1010.6", "1010.6")])
def test_phecode_normalize(raw, expected):
    assert codes.normalize(raw, "phecode") == expected


@pytest.mark.parametrize("bad", ["10000", "250.", ".5", "25O", "-8", "8.123", "250.2.1"])
def test_phecode_rejects_bad_shape(bad):
    with pytest.raises(CodeError):
        codes.normalize(bad, "phecode")


def test_phecode_parents():
    assert codes.parents("250.21", "phecode") == ["250.2", "250.0"]
    assert codes.parents("250.2", "phecode") == ["250.0"]
    assert codes.parents("250", "phecode") == []
    assert codes.parents("008.5", "phecode", include_groups=True) == ["8.0"]
    assert not codes.is_known("250.2", "phecode") and codes.is_valid("250.2", "phecode")


# ---------------------------------------------------------------- RxNorm

@pytest.mark.parametrize("raw, expected", [("6809", "6809"), (" 6809 ", "6809"), ("006809", "6809")])
def test_rxnorm_normalize(raw, expected):
    assert codes.normalize(raw, "rxnorm") == expected


@pytest.mark.parametrize("bad, reason", [("6809.0", "float column"), ("0", "positive integer"),
                                         ("RX6809", "positive integer"), ("68 09", "positive integer"),
                                         ("٦٨٠٩", "positive integer")])
def test_rxnorm_rejects_bad_shape(bad, reason):
    with pytest.raises(CodeError, match=reason):
        codes.normalize(bad, "rxnorm")


def test_rxnorm_is_flat_and_tableless():
    assert codes.parents("6809", "rxnorm", include_groups=True) == []
    assert codes.children("6809", "rxnorm") == []
    assert not codes.is_known("6809", "rxnorm") and codes.is_leaf("6809", "rxnorm")
    assert codes.describe("6809", "rxnorm") is None


# ---------------------------------------------------------------- ICD-10-PCS

@pytest.mark.parametrize("raw, expected", [("0QS734Z", "0QS734Z"), (" 0qs734z\n", "0QS734Z"),
                                           ("B2111ZZ", "B2111ZZ"), ("XW033E5", "XW033E5")])
def test_icd10pcs_normalize(raw, expected):
    assert codes.normalize(raw, "icd10pcs") == expected


@pytest.mark.parametrize("bad, reason", [
    ("0QS734", "expected 7 characters"), ("0QS7", "expected 7 characters"),
    ("0QS734ZZ", "too long"), ("0QSI34Z", "I and O are not PCS characters"),
    ("0QS.34Z", "expected 7 characters"), ("0QS-34Z", "expected 7 characters"),
])
def test_icd10pcs_rejects_bad_shape(bad, reason):
    with pytest.raises(CodeError, match=reason):
        codes.normalize(bad, "icd10pcs")
    assert not codes.is_valid(bad, "icd10pcs")


def test_icd10pcs_parents_are_prefixes_down_to_the_section():
    assert codes.parents("0QS734Z", "icd10pcs") == ["0QS734", "0QS73", "0QS7", "0QS", "0Q", "0"]
    assert codes.parents("0qs", "icd10pcs") == ["0Q", "0"]
    assert codes.parents("0", "icd10pcs") == []
    assert codes.describe("0", "icd10pcs") == "Medical and Surgical" and codes.is_known("B", "icd10pcs")
    assert codes.describe("0QS734Z", "icd10pcs") is None and not codes.is_known("0QS734Z", "icd10pcs")
    assert codes.is_leaf("0QS734Z", "icd10pcs") and not codes.is_leaf("0QS", "icd10pcs")
    with pytest.raises(CodeError):
        codes.parents("0QO", "icd10pcs")


# ---------------------------------------------------------------- ICD-9-CM procedures

@pytest.mark.parametrize("raw, expected", [("3961", "39.61"), ("39.61", "39.61"), ("881", "88.1"),
                                           ("0066", "00.66"), (" 9604 ", "96.04"), ("00.1", "00.1")])
def test_icd9proc_normalize(raw, expected):
    assert codes.normalize(raw, "icd9proc") == expected


@pytest.mark.parametrize("bad, reason", [
    ("39", "leading zeros lost"), ("6", "leading zeros lost"), ("396123", "too long"),
    ("3.961", "expected 2 digits, a dot and 1-2 digits"), ("V4581", "expected 2 digits"),
    ("39.", "expected 2 digits"),
])
def test_icd9proc_rejects_bad_shape(bad, reason):
    with pytest.raises(CodeError, match=reason):
        codes.normalize(bad, "icd9proc")
    assert not codes.is_valid(bad, "icd9proc")


def test_icd9proc_parents_by_truncation():
    assert codes.parents("3961", "icd9proc") == ["39.6", "39"]
    assert codes.parents("88.1", "icd9proc") == ["88"]
    assert codes.parents("39", "icd9proc") == []  # the category is the root of its family
    assert not codes.is_known("39.61", "icd9proc") and codes.describe("39.61", "icd9proc") is None
    assert codes.token_type("icd9proc") == codes.PROCEDURE == codes.token_type("icd10pcs")


# ---------------------------------------------------------------- well-formed vs known

@pytest.mark.parametrize("system, known, unknown, malformed", [
    ("icd10cm", "I10", "I10.9", "I1"),
    ("atc", "N02BE01", "N02BE99", "N02BE9"),
    ("cpt", "99213", "99216", "9921"),
])
def test_valid_versus_known(system, known, unknown, malformed):
    assert codes.is_valid(known, system) and codes.is_known(known, system)
    assert codes.is_valid(unknown, system) and not codes.is_known(unknown, system)
    assert not codes.is_valid(malformed, system) and not codes.is_known(malformed, system)
    with pytest.raises(CodeError):
        codes.parents(malformed, system)


# ---------------------------------------------------------------- systems without a code table

# system: (a well-formed code, a form only lookups accept or None, a malformed code and its reason,
#          the lookups the module leaves to the table-less default)
TABLELESS = {
    "phecode": ("250.21", None, ("25O", "malformed phecode"),
                {"is_known", "describe", "children", "is_leaf", "leaves_under"}),
    "rxnorm": ("6809", None, ("6809.0", "float column"),
               {"parents", "is_known", "describe", "children", "leaves_under"}),
    "icd9proc": ("39.61", "39", ("3.961", "malformed icd9proc"),
                 {"is_known", "describe", "children", "is_leaf", "leaves_under"}),
    "icd10pcs": ("0QS734Z", "0QS", ("0QSI34Z", "I and O are not PCS"), {"children", "leaves_under"}),
    "icd9cm": ("250.02", "240-279", ("250.123", "too long"), {"children", "is_leaf", "leaves_under"}),
}
DEFAULTS = {"parents": [], "is_known": False, "describe": None, "children": [], "is_leaf": False,
            "leaves_under": []}


@pytest.mark.parametrize("system", sorted(TABLELESS))
def test_tableless_lookups_are_one_default_not_copies(system):
    module = getattr(codes, system)
    *_, defaulted = TABLELESS[system]
    assert {name for name in DEFAULTS if hasattr(module, name)} == set(DEFAULTS) - defaulted


@pytest.mark.parametrize("system", sorted(TABLELESS))
def test_tableless_default_answers_nothing_known_for_a_well_formed_code(system):
    code, lookup_form, _, defaulted = TABLELESS[system]
    for name in sorted(defaulted):
        lookup = getattr(codes, name)
        for c in [code, f" {code.lower()} "] + ([lookup_form] if lookup_form else []):
            assert lookup(c, system) == DEFAULTS[name], (name, c)
            assert type(lookup(c, system)) is type(DEFAULTS[name])
    if "children" in defaulted:  # a fresh list each call: a caller that extends it changes nothing
        codes.children(code, system).append("X")
        assert codes.children(code, system) == []


@pytest.mark.parametrize("system", sorted(TABLELESS))
def test_tableless_default_still_rejects_a_malformed_code(system):
    _, _, (bad, reason), defaulted = TABLELESS[system]
    with pytest.raises(CodeError, match=reason):
        codes.normalize(bad, system)
    for name in sorted(defaulted):
        if name in ("is_known", "is_leaf"):  # these two answer False for a malformed code
            assert getattr(codes, name)(bad, system) is False
            continue
        with pytest.raises(CodeError, match=reason):
            getattr(codes, name)(bad, system)
    for name in ("children", "leaves_under"):
        with pytest.raises(CodeError, match="must be a str, got int"):
            getattr(codes, name)(250, system)


def test_tableless_default_accepts_what_the_systems_lookups_accept():
    # a 2-digit ICD-9 procedure category and a PCS prefix are lookup keys, not codes
    assert not codes.is_valid("39", "icd9proc") and codes.children("39", "icd9proc") == []
    assert not codes.is_valid("0QS", "icd10pcs") and codes.leaves_under("0QS", "icd10pcs") == []
    with pytest.raises(CodeError):  # a phecode has no lookup form beyond its codes
        codes.children("250-279", "phecode")
