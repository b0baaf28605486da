"""Clinical knowledge for the demo ClinVec graph: what a real clinical knowledge graph also knows.

Two kinds of links, both textbook pharmacology and billing practice, written down here independently
of the synthetic generator (this module imports nothing, least of all the generator's modules):

- drug indications: an ATC group treats diagnoses of some ICD-10-CM categories;
- procedure-diagnosis links: a CPT code is the usual test, imaging or therapy for some categories.

Nothing here encodes the generator's risk model (which conditions raise which risks) or its planted
outcome: loop diuretics treat heart failure because they do, not because the task is about it.
Keys are prefixes: an ATC key matches every code that starts with it ("C03CA" matches C03CA01).
"""

from __future__ import annotations

# ATC prefix -> ICD-10-CM categories it is indicated for.
INDICATIONS: dict[str, tuple[str, ...]] = {
    "A10A": ("E11", "E10"),                       # insulins
    "A10B": ("E11",),                             # oral and injectable glucose-lowering drugs
    "A10BJ": ("E11", "E66"),                      # GLP-1 agonists (diabetes, weight management)
    "A02B": ("K21", "K25"),                       # proton-pump inhibitors, H2 blockers
    "B01AA": ("I48", "I26"),                      # vitamin K antagonists
    "B01AF": ("I48", "I26"),                      # direct factor Xa inhibitors
    "B01AC": ("I25", "I20", "I63"),               # platelet aggregation inhibitors
    "B03A": ("D50",),                             # iron
    "B03XA": ("D63", "N18"),                      # erythropoiesis-stimulating agents
    "V03AE": ("N18",),                            # phosphate binders
    "C01BD": ("I48",),                            # class III antiarrhythmics
    "C01DA": ("I20", "I25"),                      # organic nitrates
    "C03A": ("I10",),                             # thiazides
    "C03CA": ("I50", "R60"),                      # loop diuretics
    "C03DA": ("I50", "I10"),                      # aldosterone antagonists
    "C07AB": ("I10", "I25", "I48", "I20"),        # selective beta blockers
    "C07AG": ("I50", "I10"),                      # alpha and beta blockers
    "C08CA": ("I10", "I20"),                      # dihydropyridine calcium-channel blockers
    "C09A": ("I10", "I50"),                       # ACE inhibitors
    "C09C": ("I10", "I50"),                       # angiotensin II receptor blockers
    "C09DX": ("I50",),                            # ARB + neprilysin inhibitor
    "C10A": ("E78", "I25"),                       # lipid-modifying agents
    "H02AB": ("J44", "J45", "M06"),               # systemic glucocorticoids
    "H03AA": ("E03",),                            # thyroid hormones
    "J01": ("J18", "J15", "N39", "N30", "L03", "J06", "J20", "A41"),   # systemic antibacterials
    "J07BB": ("Z23",),                            # influenza vaccines
    "L02AE": ("C61",),                            # GnRH analogues
    "L02BB": ("C61",),                            # anti-androgens
    "L02BA": ("C50",),                            # anti-oestrogens
    "L02BG": ("C50",),                            # aromatase inhibitors
    "M01A": ("M17", "M16", "M19", "M54"),         # NSAIDs
    "M03BX": ("M54",),                            # centrally acting muscle relaxants
    "N02AX": ("M54", "M17", "M16", "M19"),        # other opioids
    "N02BE": ("M54", "M17", "M16", "M19", "R51", "G43"),   # anilides (paracetamol)
    "N02CC": ("G43",),                            # triptans
    "N03AX": ("G43", "G40"),                      # other antiepileptics (topiramate)
    "N05BA": ("F41",),                            # benzodiazepines
    "N05BB": ("F41",),                            # hydroxyzine
    "N06A": ("F32", "F33", "F41"),                # antidepressants
    "N06D": ("F03", "G30", "F01"),                # anti-dementia drugs
    "R03": ("J45", "J44"),                        # drugs for obstructive airway diseases
}

# CPT code -> ICD-10-CM categories it usually tests, images or treats.
PROCEDURE_FOR: dict[str, tuple[str, ...]] = {
    "10060": ("L03", "L02"),                      # incision and drainage of abscess
    "20610": ("M17", "M16", "M19"),               # joint injection
    "43235": ("K21", "K25"),                      # upper GI endoscopy
    "55700": ("C61",),                            # prostate biopsy
    "70450": ("F03", "G30", "I63"),               # CT head
    "70551": ("G43", "G30"),                      # MRI brain
    "71046": ("J18", "J44", "I50"),               # chest X-ray
    "72100": ("M54",),                            # lumbar spine X-ray
    "72148": ("M54",),                            # lumbar spine MRI
    "73562": ("M17",),                            # knee X-ray
    "77065": ("C50",), "77066": ("C50",),         # mammography
    "80061": ("E78",),                            # lipid panel
    "80069": ("N18",),                            # renal function panel
    "81001": ("N39", "N30"), "87086": ("N39", "N30"),   # urinalysis, urine culture
    "82043": ("N18", "E11"),                      # urine albumin
    "82565": ("N18",),                            # creatinine
    "82728": ("D50",), "83540": ("D50",),         # ferritin, iron
    "82947": ("E11",), "83036": ("E11",),         # glucose, HbA1c
    "83880": ("I50",),                            # natriuretic peptide
    "84153": ("C61",),                            # PSA
    "84439": ("E03",), "84443": ("E03",),         # free T4, TSH
    "85610": ("I48",),                            # prothrombin time (INR)
    "90791": ("F32", "F33", "F41"), "90834": ("F32", "F33", "F41"),   # psychiatric evaluation, psychotherapy
    "92250": ("E11",),                            # fundus photography (diabetic retinopathy)
    "92928": ("I25",),                            # coronary stent
    "93000": ("I48", "I25", "I20"),               # electrocardiogram
    "93015": ("I25", "I20"),                      # stress test
    "93224": ("I48",),                            # Holter monitor
    "93306": ("I50", "I48", "I25"),               # echocardiography
    "94010": ("J44", "J45"), "94060": ("J44", "J45"), "94640": ("J45", "J44"),  # spirometry, nebuliser
    "96127": ("F32", "F41"),                      # brief emotional or behavioural assessment
    "96413": ("C50",),                            # chemotherapy infusion
    "97110": ("M54", "M17"),                      # therapeutic exercise
    "99401": ("E66",),                            # preventive counselling
    "99483": ("F03", "G30"),                      # cognitive assessment and care plan
}


def indications(atc_code: str) -> tuple[str, ...]:
    """ICD-10-CM categories the ATC code is indicated for (the longest matching prefix wins)."""
    for n in range(len(atc_code), 0, -1):
        hit = INDICATIONS.get(atc_code[:n])
        if hit is not None:
            return hit
    return ()
