"""The trajectory task's chronic disease processes as data: onset, progression stages, treatment and the
real codes each stage leaves (common head codes plus the ICD-10-CM categories / ATC groups whose other
leaves are their rare relatives). `code_space.py` compiles them; `trajectory.py` simulates them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One progression stage. `icd` head codes are the common ones, most frequent first; every other leaf
    of the `icd_tail` categories is a rare relative (same category or a co-occurring one)."""

    icd: str                          # head ICD-10-CM leaf codes, space separated
    icd_tail: str = ""                # ICD-10-CM categories whose leaves form the stage's long tail
    visits: float = 2.0               # process visits per year while in this stage (x frailty)
    cpt: str = ""                     # "code:P(per visit)" labs and procedures
    drugs: str = ""                   # ATC level-4 groups (or substances) of the drug started on entering it
    drug_p: float = 0.0               # P(a drug of `drugs` is started on entering the stage)
    hosp: float = 0.0                 # stays per year while in this stage
    entry_stay_p: float = 0.0         # P(the progression into this stage is an admission)


@dataclass(frozen=True)
class Process:
    """A chronic disease process. Onset: logit P(onset before the window end) = base + age·(age−60)/10 +
    female + Σ links + 0.4·log(frailty). Then stage k lasts Exponential(sojourn_years[k]) years of
    progress; from the day a disease-modifying treatment is started *after* the diagnosis, progress runs
    at `response` of its speed (treatment started before the onset, for another indication, does not
    slow it)."""

    name: str
    base: float
    age: float
    female: float
    links: tuple[tuple[str, float], ...]
    stages: tuple[Stage, ...]
    sojourn_years: tuple[float, ...]  # mean years of progress spent in stage 1, 2 (the last stage is final)
    treatment: str                    # ATC groups of the disease-modifying drug (order matters for risk)
    treat_p: float                    # P(treatment started within 90 days after the diagnosis)
    pre_treat_p: float                # P(the same drug was already taken before the onset)
    response: float                   # progress speed once treated after the diagnosis (1 = no effect)


# Order matters: links may only name processes above.
PROCESSES: tuple[Process, ...] = (
    Process(
        "diabetes", base=-1.3, age=0.35, female=-0.1, links=(),
        stages=(
            Stage("E11.9 E11.65 Z79.84 E11.69 R73.03 E11.8 E66.9",
                  "E11 E13 R73 E66 Z68", visits=3.0, cpt="83036:0.6 82947:0.2 80053:0.3 82043:0.15",
                  drugs="A10BA A10BB A10BH", drug_p=0.85),
            Stage("E11.22 E11.319 E11.40 E11.65 E11.51 E11.9 E11.42 E11.3293",
                  "E11 E08 E09 H35 G62 I70 M14", visits=4.0,
                  cpt="83036:0.6 82043:0.4 92250:0.15 95907:0.02", drugs="A10BJ06 A10BJ A10BH", drug_p=0.6),
            Stage("E11.621 Z79.4 E11.649 E11.22 L97.519 E11.52 Z89.411",
                  "E11 E10 L97 I70 Z89 L89 T38", visits=6.0,
                  cpt="83036:0.6 82043:0.4 97597:0.1 11042:0.05", drugs="A10AE04 A10AE A10AB A10AC", drug_p=0.9,
                  hosp=0.15, entry_stay_p=0.3),
        ),
        sojourn_years=(6.0, 5.0), treatment="A10BK01 A10BK", treat_p=0.35, pre_treat_p=0.05, response=0.45),
    Process(
        "ckd", base=-2.6, age=0.7, female=0.0, links=(("diabetes", 1.1),),
        stages=(
            Stage("N18.30 N18.2 N18.31 N18.9 I12.9", "N18 N28 N25 I12 R80", visits=2.0,
                  cpt="82565:0.5 80069:0.3 82043:0.3 81001:0.2"),
            Stage("N18.32 N18.4 D63.1 E87.5 N25.81 E83.39", "N18 D63 E87 N25 E83 D64 N17 I13", visits=4.0,
                  cpt="82565:0.6 80069:0.5 85025:0.3 83970:0.2", drugs="B03XA01 B03XA V03AE A11CC", drug_p=0.6,
                  hosp=0.08, entry_stay_p=0.2),
            Stage("N18.6 Z99.2 N18.5 D63.1 Z49.01 E87.5 T86.11", "N18 Z99 Z49 Z94 T86 E87 N17 T82 I13",
                  visits=8.0, cpt="90935:0.4 82565:0.5 80069:0.5 36415:0.3", drugs="B03XA V03AE H05BX",
                  drug_p=0.9, hosp=0.4, entry_stay_p=0.6),
        ),
        sojourn_years=(5.0, 3.5), treatment="C09AA03 C09AA C09CA", treat_p=0.55, pre_treat_p=0.25, response=0.5),
    Process(
        "coronary", base=-2.2, age=0.65, female=-0.7, links=(("diabetes", 0.6), ("ckd", 0.4)),
        stages=(
            Stage("I25.10 I20.9 E78.5 I25.119 E78.00", "I25 I20 E78 R07", visits=2.0,
                  cpt="93000:0.3 80061:0.4 93015:0.05", drugs="B01AC06 B01AC", drug_p=0.7),
            Stage("I21.4 I25.2 I21.3 I25.10 I21.09 Z95.5 I21.19", "I21 I22 I24 I25 Z95 I20", visits=3.0,
                  cpt="93000:0.4 93306:0.1 92928:0.04 93458:0.02", drugs="B01AC C01DA", drug_p=0.8,
                  hosp=0.1, entry_stay_p=0.7),
            Stage("I25.5 I25.10 I25.119 Z95.1 I25.2 I25.810", "I25 I24 Z95 I51 T82", visits=4.0,
                  cpt="93000:0.4 93306:0.15 93015:0.05", drugs="C01DA C01EB", drug_p=0.5, hosp=0.15,
                  entry_stay_p=0.3),
        ),
        sojourn_years=(6.0, 5.0), treatment="C10AA05 C10AA", treat_p=0.7, pre_treat_p=0.3, response=0.55),
    Process(
        "heart_failure", base=-3.4, age=0.75, female=-0.2,
        links=(("diabetes", 0.5), ("ckd", 0.7), ("coronary", 1.3)),
        stages=(
            Stage("I50.9 I11.0 I50.32 I50.22 I50.30 I50.20", "I50 I11 R06 R60", visits=3.0,
                  cpt="93306:0.15 83880:0.3 93000:0.3", drugs="C03CA01 C03CA", drug_p=0.8),
            Stage("I50.23 I50.33 I50.9 I50.43 R06.02 I13.0 R60.0", "I50 I13 R06 R60 I27 I34 I36 J81",
                  visits=5.0, cpt="93306:0.2 83880:0.4 93000:0.3 80048:0.3", drugs="C03DA01 C03DA C09DX", drug_p=0.6,
                  hosp=0.2, entry_stay_p=0.5),
            Stage("I50.84 I42.0 I50.43 I47.20 Z95.810 I50.813 I42.9", "I50 I42 I47 I49 Z95 I44 I45 I27 T82",
                  visits=8.0, cpt="93306:0.3 83880:0.5 93000:0.4 93289:0.1", drugs="C01AA C01BD", drug_p=0.5,
                  hosp=0.5, entry_stay_p=0.7),
        ),
        sojourn_years=(3.0, 2.5), treatment="C07AB07 C07AB C07AG", treat_p=0.6, pre_treat_p=0.3, response=0.4),
    Process(
        "copd", base=-2.6, age=0.5, female=-0.1, links=(),
        stages=(
            Stage("J44.9 J43.9 R06.00 J41.0 R05.9", "J44 J43 J41 J42 R06 R05", visits=2.0,
                  cpt="94010:0.2 94060:0.05 71046:0.1", drugs="R03AC02 R03AC R03AK", drug_p=0.8),
            Stage("J44.1 J44.0 J44.9 J96.01 R09.02 J18.9", "J44 J96 J18 J15 R09 J20 J47", visits=4.0,
                  cpt="94010:0.2 71046:0.3 94640:0.1", drugs="H02AB07 H02AB R03AL", drug_p=0.6, hosp=0.25,
                  entry_stay_p=0.5),
            Stage("J96.11 Z99.81 J44.1 J96.21 J84.10 I27.23", "J96 Z99 J84 J98 I27 J44 R09", visits=6.0,
                  cpt="94010:0.3 94760:0.3 71046:0.3", drugs="R03DX J01FA", drug_p=0.5, hosp=0.5,
                  entry_stay_p=0.5),
        ),
        sojourn_years=(5.0, 4.0), treatment="R03BB04 R03BB", treat_p=0.6, pre_treat_p=0.1, response=0.5),
    Process(
        "dementia", base=-5.2, age=1.3, female=0.2, links=(("diabetes", 0.3), ("coronary", 0.3)),
        stages=(
            Stage("R41.81 G31.84 R41.3 F06.70", "R41 G31 F06", visits=1.5, cpt="96127:0.2 70450:0.05"),
            Stage("F03.90 G30.9 F01.50 G30.1 R29.6 Z91.81", "F03 F01 F02 G30 G31 R29 Z91 I63 I69", visits=3.0,
                  cpt="99483:0.1 70551:0.05", drugs="N06DA N06DX", drug_p=0.6, hosp=0.1),
            Stage("F03.C0 S72.001A Z74.01 F03.B0 S72.002A R29.6 I69.354", "F03 S72 Z74 I69 W19 W18 L89 R26",
                  visits=5.0, cpt="99309:0.3 73502:0.1", drugs="N05AH04 N05AH N05AX", drug_p=0.4, hosp=0.3,
                  entry_stay_p=0.4),
        ),
        sojourn_years=(3.0, 3.0), treatment="N06DA02 N06DA", treat_p=0.5, pre_treat_p=0.0, response=0.7),
    Process(
        "cancer", base=-3.6, age=0.6, female=0.0, links=(),
        stages=(
            Stage("C50.911 C61 C34.90 C18.9 C50.912 C34.11 Z17.0", "C50 C61 C34 C18 C20 C67 C64 Z17", visits=3.0,
                  cpt="77066:0.1 84153:0.2 71260:0.1 88305:0.1", drugs="L02BG L02BA L02AE", drug_p=0.3),
            Stage("Z51.11 C50.911 C34.90 D70.1 R11.2 Z51.0 C18.9", "Z51 D70 D61 R11 C50 C34 C18 T45 Z45",
                  visits=8.0, cpt="96413:0.4 96415:0.2 85025:0.5 77385:0.1", drugs="L01BC02 L01BC L01XA L01CD L01FD L01FF",
                  drug_p=0.8, hosp=0.2, entry_stay_p=0.2),
            Stage("C78.00 C79.51 C78.7 C79.31 Z51.5 C77.9 R18.8", "C78 C79 C77 Z51 R18 G89 R64", visits=6.0,
                  cpt="71260:0.3 78815:0.1 96413:0.2", drugs="N02AA05 N02AA N02AB L01EA L01EB", drug_p=0.7, hosp=0.4,
                  entry_stay_p=0.4),
        ),
        sojourn_years=(3.0, 2.5), treatment="L01FF", treat_p=0.0, pre_treat_p=0.0, response=1.0),
)

# Background: minor acute illness, injuries, check-ups and symptoms, for everyone (x frailty).
BACKGROUND = Stage(
    "J06.9 Z00.00 Z23 R05.9 R10.9 R53.83 Z00.01 R07.9 J02.9 M54.50 R51.9 J01.90 N39.0 R42 L30.9 S93.401A",
    "J00 J01 J02 J03 J06 J20 J30 R05 R10 R11 R19 R21 R50 R51 R53 M25 M54 M79 Z00 Z01 Z11 Z12 Z13 "
    "S93 S63 S61 S01 S80 S90 H10 H66 L03 L08 B34 K52 N39 T78",
    cpt="85025:0.1 80053:0.1 36415:0.15 90471:0.06 90686:0.06")
BACKGROUND_DRUGS = "J01CA04:0.12 N02BE01:0.05 J07BB02:0.08"     # P(per background visit)
TAIL_MASS = 0.2        # share of a stage's diagnosis draws that go to its rare relatives
TAIL_ZIPF = 1.1        # Zipf exponent of the tail, ranks continuing after the head codes
HEAD_ZIPF = 1.0        # Zipf exponent of the head codes
DRUG_TAIL_MASS = 0.1   # share of drug starts that pick a rare substance of the same ATC groups


def process_index() -> dict[str, int]:
    return {p.name: i for i, p in enumerate(PROCESSES)}
