"""Disease modules as data: who gets each condition, and the real ICD-10-CM, ATC and CPT codes it leaves.

Every code here is a real leaf code of its system (tests check them). Novel replacement codes live in
`NOVEL_ICD` / `NOVEL_ATC`: one real sibling per ICD-10-CM category and per ATC level-4 group that no
module emits normally, so it can stand in for a code the embedding vocabulary lacks.
"""

from __future__ import annotations

from dataclasses import dataclass

# (code, weight when mild, weight when severe): the skew that puts E11.65 beside E11.9.
Weighted = tuple[tuple[str, float, float], ...]


@dataclass(frozen=True)
class Condition:
    """One disease module. Chronic: `base` is the logit of having it by the window end at age 60.
    Acute: `base` is the log of episodes per year at age 60. `age` is per decade from 60."""

    name: str
    chronic: bool
    base: float
    age: float = 0.0
    female: float = 0.0
    links: tuple[tuple[str, float], ...] = ()   # (earlier condition, logit / log-rate added when present)
    icd: Weighted = ()
    atc: Weighted = ()            # chronic: P(patient is on the drug); acute: P(per episode)
    cpt: tuple[tuple[str, float], ...] = ()     # P(per visit or episode)
    visits: float = 2.0           # chronic: condition visits per year (x frailty, x1.5 when severe)
    fills: float = 3.0            # chronic: fills per year per drug (~90-day supplies)
    severe: float = 0.3           # chronic: P(severe), which shifts the code mix and drugs
    hosp: float = 0.0             # chronic: stays per year; acute: P(stay | episode)
    los: float = 0.0              # log-multiplier of the mean length of every stay of a patient with it


def _w(spec: str) -> Weighted:
    """'E11.9:50/20 E11.65:12/30 I10:1' -> ((code, mild, severe), ...); one number means both."""
    out = []
    for item in spec.split():
        code, w = item.rsplit(":", 1)
        mild, _, severe = w.partition("/")
        out.append((code, float(mild), float(severe or mild)))
    return tuple(out)


def _p(spec: str) -> tuple[tuple[str, float], ...]:
    return tuple((c, float(p)) for c, p in (item.rsplit(":", 1) for item in spec.split()))


# Order matters: a condition's links may only name conditions above it.
CONDITIONS: tuple[Condition, ...] = (
    Condition("obesity", True, -1.6, age=-0.05,
              icd=_w("E66.9:45 E66.01:25 E66.3:15 Z68.30:5 Z68.35:5 Z68.41:5"),
              atc=_w("A10BJ06:0.05/0.15"), cpt=_p("99401:0.15"), visits=0.8),
    Condition("hypertension", True, -0.4, age=0.55, links=(("obesity", 0.7),),
              icd=_w("I10:1"), cpt=_p("80048:0.3 93000:0.05"),
              atc=_w("C09AA03:0.45/0.6 C08CA01:0.3/0.5 C03AA03:0.25/0.4 C09CA01:0.2/0.3 C07AB02:0.15/0.3")),
    Condition("hyperlipidaemia", True, -0.7, age=0.4, links=(("obesity", 0.4), ("hypertension", 0.5)),
              icd=_w("E78.5:50/40 E78.00:25/25 E78.2:15/25 E78.49:10/10"), cpt=_p("80061:0.5"),
              atc=_w("C10AA05:0.45/0.5 C10AA07:0.2/0.35 C10AA01:0.15/0.1 C10AX09:0.05/0.2"), visits=1.2),
    Condition("type2_diabetes", True, -2.1, age=0.3, links=(("obesity", 1.1), ("hypertension", 0.4)),
              icd=_w("E11.9:50/20 E11.65:12/30 E11.22:5/15 E11.40:4/8 E11.319:3/6 E11.69:10/8 "
                     "E11.649:4/6 E11.51:2/5 E11.8:4/2 Z79.84:20/10 Z79.4:0/20"),
              atc=_w("A10BA02:0.8/0.75 A10BH01:0.15/0.3 A10BK01:0.1/0.25 A10BK03:0.08/0.2 "
                     "A10BJ02:0.05/0.2 A10AE04:0.05/0.7 A10BB07:0.1/0.25"),
              cpt=_p("83036:0.6 82947:0.2 80053:0.3 82043:0.15 92250:0.05"), visits=3.0, severe=0.3),
    Condition("ckd", True, -3.4, age=0.7, links=(("type2_diabetes", 1.0), ("hypertension", 0.8)),
              icd=_w("N18.30:20/5 N18.31:15/5 N18.32:10/10 N18.2:15/5 N18.4:3/35 N18.9:37/20 D63.1:0/12"),
              atc=_w("V03AE02:0/0.2 B03XA01:0/0.2"), cpt=_p("82565:0.4 80069:0.3 82043:0.2"),
              visits=2.0, severe=0.2, hosp=0.03, los=0.2),
    Condition("ischaemic_heart_disease", True, -3.0, age=0.6, female=-0.7,
              links=(("hyperlipidaemia", 0.6), ("type2_diabetes", 0.5), ("hypertension", 0.5)),
              icd=_w("I25.10:70/40 I25.119:5/20 I20.9:15/20 I25.2:10/20"),
              atc=_w("B01AC06:0.7/0.8 B01AC04:0.15/0.5 C01DA14:0.1/0.4 C07AB02:0.3/0.5"),
              cpt=_p("93000:0.3 93015:0.05 93306:0.05 92928:0.01"), visits=2.0, hosp=0.04, los=0.1),
    Condition("atrial_fibrillation", True, -3.7, age=0.8, links=(("hypertension", 0.5), ("obesity", 0.3)),
              icd=_w("I48.91:60/40 I48.0:20/15 I48.20:10/20 I48.19:10/25 Z79.01:20/20"),
              atc=_w("B01AF01:0.3/0.35 B01AF02:0.35/0.4 B01AA03:0.15/0.2 C07AB02:0.4/0.5 C01BD01:0.03/0.15"),
              cpt=_p("93000:0.5 93306:0.08 85610:0.1 93224:0.05"), visits=2.5, hosp=0.04, los=0.1),
    Condition("heart_failure", True, -4.6, age=0.7,
              links=(("ischaemic_heart_disease", 1.3), ("type2_diabetes", 0.5), ("hypertension", 0.6),
                     ("ckd", 0.7), ("atrial_fibrillation", 1.0)),
              icd=_w("I50.9:40/15 I50.22:15/15 I50.32:15/15 I50.42:5/10 I50.23:0/15 I50.33:0/10 I11.0:5/10"),
              atc=_w("C03CA01:0.6/0.9 C07AG02:0.4/0.5 C09DX04:0.1/0.3 C03DA01:0.2/0.4"),
              cpt=_p("93306:0.15 83880:0.3 93000:0.3"), visits=3.0, hosp=0.15, los=0.3),
    Condition("asthma", True, -2.6, age=-0.1, female=0.4,
              icd=_w("J45.909:50/30 J45.20:25/10 J45.30:15/20 J45.901:10/40"),
              atc=_w("R03AC02:0.8/0.9 R03BA05:0.3/0.6 R03DC03:0.2/0.4 R03AK06:0.1/0.4"),
              cpt=_p("94010:0.1 94640:0.05"), visits=1.2, hosp=0.01),
    Condition("copd", True, -3.0, age=0.5, links=(("asthma", 0.8),),
              icd=_w("J44.9:70/40 J44.1:20/45 J44.0:10/15"),
              atc=_w("R03AC02:0.7/0.9 R03BB04:0.4/0.7 R03AK06:0.3/0.5 H02AB07:0.1/0.4"),
              cpt=_p("94010:0.15 94060:0.05 71046:0.1"), visits=2.0, hosp=0.06, los=0.2),
    Condition("depression", True, -1.9, age=-0.1, female=0.6,
              icd=_w("F32.9:45/15 F32.1:20/30 F33.1:15/30 F32.0:10/5 F33.9:10/20"),
              atc=_w("N06AB06:0.3/0.4 N06AB10:0.25/0.3 N06AB04:0.1/0.1 N06AX16:0.05/0.2 N06AX12:0.08/0.2"),
              cpt=_p("90834:0.3 96127:0.2 90791:0.05"), visits=2.0),
    Condition("anxiety", True, -2.2, female=0.6, links=(("depression", 1.2),),
              icd=_w("F41.1:55 F41.9:45"), atc=_w("N06AB10:0.3 N05BA12:0.15/0.3 N05BB01:0.1"),
              cpt=_p("90834:0.25 96127:0.1"), visits=1.5),
    Condition("hypothyroidism", True, -2.8, age=0.3, female=1.3,
              icd=_w("E03.9:90 E03.8:10"), atc=_w("H03AA01:0.9"), cpt=_p("84443:0.6 84439:0.1"), visits=1.0),
    Condition("osteoarthritis", True, -1.9, age=0.6, female=0.3, links=(("obesity", 0.7),),
              icd=_w("M17.11:20 M17.12:20 M17.0:20 M16.11:10 M16.12:10 M19.90:20"),
              atc=_w("M01AE01:0.3 M01AH01:0.1/0.2 N02BE01:0.3 M01AB05:0.1"),
              cpt=_p("73562:0.1 20610:0.08"), visits=1.0, fills=2.0),
    Condition("gerd", True, -2.0, age=0.2, links=(("obesity", 0.5),),
              icd=_w("K21.9:85 K21.00:15"), atc=_w("A02BC01:0.5 A02BC02:0.2 A02BA03:0.15"),
              cpt=_p("43235:0.03"), visits=0.8),
    Condition("breast_cancer", True, -8.0, age=0.4, female=4.5,
              icd=_w("C50.911:40 C50.912:40 C50.411:10 C50.412:10 Z17.0:20"),
              atc=_w("L02BG03:0.5 L02BA01:0.3"), cpt=_p("77066:0.2 77065:0.05 96413:0.1"),
              visits=3.0, hosp=0.03),
    Condition("prostate_cancer", True, -3.6, age=0.9, female=-20.0,
              icd=_w("C61:1"), atc=_w("L02AE02:0.3 L02BB03:0.2"), cpt=_p("84153:0.5 55700:0.02"), visits=2.0),
    Condition("dementia", True, -6.2, age=1.3, links=(("type2_diabetes", 0.3), ("hypertension", 0.2)),
              icd=_w("F03.90:50 G30.9:30 F01.50:20"), atc=_w("N06DA02:0.5 N06DX01:0.3"),
              cpt=_p("99483:0.05 70450:0.05"), visits=2.0, hosp=0.05, los=0.35),
    Condition("migraine", True, -2.7, age=-0.3, female=1.0,
              icd=_w("G43.909:60 G43.009:20 G43.109:20"), atc=_w("N02CC01:0.5 N02CC03:0.15 N03AX11:0.1/0.3"),
              cpt=_p("70551:0.03"), visits=1.0, fills=3.0),
    Condition("iron_deficiency_anaemia", True, -3.3, female=0.6, links=(("ckd", 0.8),),
              icd=_w("D50.9:85 D50.0:15"), atc=_w("B03AA07:0.6"), cpt=_p("85025:0.5 83540:0.2 82728:0.2"),
              visits=1.0, fills=3.0),
    # Acute episodes: base = log(episodes per year at age 60).
    Condition("urinary_tract_infection", False, -3.3, age=0.1, female=1.3,
              links=(("dementia", 0.8), ("type2_diabetes", 0.3)),
              icd=_w("N39.0:60 N30.00:25 N30.01:15"), atc=_w("J01XE01:0.4 J01EE01:0.3 J01MA02:0.2"),
              cpt=_p("81001:0.7 87086:0.4"), hosp=0.02),
    Condition("pneumonia", False, -4.5, age=0.35,
              links=(("copd", 1.2), ("heart_failure", 0.6), ("dementia", 0.8), ("asthma", 0.3)),
              icd=_w("J18.9:75 J18.1:10 J15.9:15"), atc=_w("J01FA10:0.5 J01CR02:0.3 J01DD04:0.2 J01MA12:0.2"),
              cpt=_p("71046:0.8 85025:0.4"), hosp=0.25),
    Condition("back_pain", False, -2.1, age=0.05, links=(("obesity", 0.3),),
              icd=_w("M54.50:50 M54.16:20 M54.2:30"), atc=_w("M03BX08:0.3 M01AE01:0.3 N02AX02:0.1"),
              cpt=_p("72100:0.15 97110:0.2 72148:0.03")),
    Condition("cellulitis", False, -4.0, age=0.1, links=(("type2_diabetes", 0.7), ("obesity", 0.5)),
              icd=_w("L03.90:40 L03.115:30 L03.116:30"), atc=_w("J01DB01:0.6 J01EE01:0.2"),
              cpt=_p("10060:0.1"), hosp=0.05),
)

# Background noise: acute visits, symptoms and check-ups that every patient has (x frailty).
NOISE_ICD = _w("J06.9:20 R10.9:10 R53.83:10 Z00.00:15 Z00.01:8 Z23:12 R42:5 R11.0:5 R07.9:8 L30.9:5 "
               "R05.9:10 R51.9:7")
NOISE_ATC = _w("J01CA04:0.12 N02BE01:0.05 J07BB02:0.08")     # P(per noise visit)
NOISE_CPT = _p("85025:0.1 80053:0.1 36415:0.15 90471:0.06 90686:0.06")
NOISE_VISITS_PER_YEAR = 1.6
OFFICE_VISITS = _w("99213:55 99214:35 99212:5 99215:5")     # one E/M code per outpatient visit (P 0.85)

# Hospital stays: background reasons, the codes billed at admission and discharge.
HOSPITAL_REASONS = _w("A41.9:30 R55:20 N17.9:20 K57.92:15 R07.9:15")
HOSPITAL_BASE_RATE = 0.02        # stays per year at age 60, x frailty, x exp(0.3 per decade)
ADMISSION_CPT, DISCHARGE_CPT = "99223", "99238"
MEAN_LOS_DAYS = 3.5              # at age 60 with no conditions; x exp(0.15 per decade + sum of `los`)

# The planted outcome: a heart-failure hospitalisation (codes at admission, mean stay ~6 days).
OUTCOME_ICD = _w("I50.23:30 I50.33:30 I50.9:20 I50.43:20")
OUTCOME_CPT = ("93306", "83880")
OUTCOME_ATC = "C03CA01"

# One novel sibling per ICD-10-CM category / ATC level-4 group that modules use. A category or group
# without an entry has no sibling to swap in and is never replaced: ICD I10, C61, Z23, R42, R55 (leaf
# categories); ATC groups whose other substances the project's ATC table lacks (A10BA metformin, B03AA,
# C09DX, J01EE, J01XE, J07BB, N02BE paracetamol, N05BB, N06DX).
NOVEL_ICD = {
    "E66": "E66.89", "Z68": "Z68.33", "E78": "E78.1", "E11": "E11.36", "Z79": "Z79.82", "N18": "N18.1",
    "D63": "D63.8", "I25": "I25.89", "I20": "I20.1", "I48": "I48.92", "I50": "I50.1", "I11": "I11.9",
    "J45": "J45.998", "J44": "J44.89", "F32": "F32.2", "F33": "F33.2", "F41": "F41.0", "E03": "E03.2",
    "M17": "M17.9", "M16": "M16.9", "M19": "M19.91", "K21": "K21.01", "C50": "C50.919", "Z17": "Z17.1",
    "F03": "F03.A0", "G30": "G30.1", "F01": "F01.A0", "G43": "G43.719", "D50": "D50.8", "N39": "N39.9",
    "N30": "N30.90", "J18": "J18.0", "J15": "J15.8", "M54": "M54.6", "L03": "L03.119", "J06": "J06.0",
    "R10": "R10.84", "R53": "R53.81", "Z00": "Z00.8", "R11": "R11.2", "R07": "R07.89", "L30": "L30.8",
    "R05": "R05.1", "R51": "R51.0", "A41": "A41.89", "N17": "N17.8", "K57": "K57.32",
}
NOVEL_ATC = {
    "A10BJ": "A10BJ05", "C09AA": "C09AA04", "C08CA": "C08CA05", "C03AA": "C03AA01", "C09CA": "C09CA03",
    "C07AB": "C07AB07", "C10AA": "C10AA03", "C10AX": "C10AX06", "A10BH": "A10BH02", "A10BK": "A10BK02",
    "A10AE": "A10AE05", "A10BB": "A10BB12", "V03AE": "V03AE01", "B03XA": "B03XA02", "B01AC": "B01AC07",
    "C01DA": "C01DA08", "B01AF": "B01AF03", "B01AA": "B01AA07", "C01BD": "C01BD07", "C03CA": "C03CA02",
    "C07AG": "C07AG01", "C03DA": "C03DA04", "R03AC": "R03AC03", "R03BA": "R03BA02", "R03DC": "R03DC01",
    "R03AK": "R03AK07", "R03BB": "R03BB06", "H02AB": "H02AB06", "N06AB": "N06AB05", "N06AX": "N06AX11",
    "N05BA": "N05BA01", "H03AA": "H03AA02", "M01AE": "M01AE02", "M01AH": "M01AH05", "M01AB": "M01AB01",
    "A02BC": "A02BC03", "A02BA": "A02BA04", "L02BG": "L02BG04", "L02BA": "L02BA03", "L02AE": "L02AE03",
    "L02BB": "L02BB04", "N06DA": "N06DA03", "N02CC": "N02CC02", "N03AX": "N03AX09", "J01MA": "J01MA01",
    "J01FA": "J01FA09", "J01CR": "J01CR05", "J01DD": "J01DD08", "M03BX": "M03BX01", "N02AX": "N02AX06",
    "J01DB": "J01DB04", "J01CA": "J01CA01",
}


def novel_sibling(code: str, system: str) -> str | None:
    """The real sibling code that replaces `code` when it is made novel (None: it has no sibling)."""
    if system == "icd10cm":
        return NOVEL_ICD.get(code.split(".")[0])
    if system == "atc":
        return NOVEL_ATC.get(code[:5])
    return None


def condition_index() -> dict[str, int]:
    return {c.name: i for i, c in enumerate(CONDITIONS)}
