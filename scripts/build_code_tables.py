"""Maintainer script: regenerate the code tables shipped in exmed_bert/codes/data/.

ICD-10-CM is extracted from the `simple_icd_10_cm` package (CMS tabular list, public domain); it is
a build-time dependency only, never imported at runtime. The ATC table is curated by hand in
atc.tsv; this script checks it (shapes, levels, every ancestor present) and rewrites it sorted.

    python scripts/build_code_tables.py            # rebuild icd10cm.tsv.gz, check + sort atc.tsv
    python scripts/build_code_tables.py --check    # only check atc.tsv
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "exmed_bert" / "codes" / "data"
ATC_LEVEL_BY_LENGTH = {1: 1, 3: 2, 4: 3, 5: 4, 7: 5}


def icd10cm_rows() -> list[tuple[str, str, int, str]]:
    """(code, parent, is_leaf, description) in tabular order: chapter, its blocks, their codes."""
    import simple_icd_10_cm as cm  # build-time only

    rows: list[tuple[str, str, int, str]] = []

    def block_id(name: str) -> str:
        # Single-category blocks ("B10") share their name with the category; "B10-B10" keeps ids unique.
        return name if "-" in name else f"{name}-{name}"

    def clean(desc: str) -> str:
        return " ".join(desc.split())  # a few CMS descriptions carry tabs or line breaks

    def add_code(code: str, parent: str) -> None:
        kids = cm.get_children(code)
        rows.append((code, parent, int(not kids), clean(cm.get_description(code))))
        for kid in kids:
            assert kid.startswith(code), (kid, code)  # the runtime relies on parents being prefixes
            add_code(kid, code)

    chapters = [c for c in cm.get_all_codes(True) if cm.is_chapter(c)]
    for chapter in chapters:
        desc = clean(cm.get_description(chapter))
        # Chapter ids are their code ranges ("E00-E89"), written at the end of the description.
        chapter_id = desc[desc.rindex("(") + 1 : desc.rindex(")")]
        rows.append((chapter_id, "", 0, desc[: desc.rindex("(")].strip()))
        for block in cm.get_children(chapter):
            bid = block_id(block)
            bdesc = clean(cm.get_description(block, prioritize_blocks=True))
            rows.append((bid, chapter_id, 0, bdesc[: bdesc.rindex("(")].strip() if "(" in bdesc else bdesc))
            for category in cm.get_children(block, prioritize_blocks=True):
                assert len(category) == 3, (block, category)  # blocks hold categories, never blocks
                add_code(category, bid)
    return rows


def write_icd10cm(path: Path) -> int:
    rows = icd10cm_rows()
    codes = [r[0] for r in rows]
    assert len(codes) == len(set(codes)), "duplicate ICD-10-CM ids"
    # Plain tab-joined lines, no quoting: the runtime reads the file with one str.split.
    lines = ["code\tparent\tis_leaf\tdescription"]
    for row in rows:
        fields = [str(x) for x in row]
        assert not any("\t" in x or "\n" in x for x in fields), row
        lines.append("\t".join(fields))
    tmp = path.with_suffix(".tmp")
    # mtime=0 keeps the gzip bytes identical between rebuilds, so git sees no spurious change.
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))
    os.replace(tmp, path)
    return len(rows)


def check_atc(path: Path, rewrite: bool) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    seen: dict[str, dict] = {}
    for i, row in enumerate(rows, start=2):
        code, name, level = row["code"].strip(), row["name"].strip(), row["level"].strip()
        if len(code) not in ATC_LEVEL_BY_LENGTH or not code.isalnum() or code != code.upper():
            sys.exit(f"{path}:{i}: bad ATC code {code!r}")
        if int(level) != ATC_LEVEL_BY_LENGTH[len(code)]:
            sys.exit(f"{path}:{i}: {code} has level {level}, expected {ATC_LEVEL_BY_LENGTH[len(code)]}")
        if not name:
            sys.exit(f"{path}:{i}: {code} has no name")
        if code in seen:
            sys.exit(f"{path}:{i}: duplicate {code}")
        seen[code] = {"code": code, "name": name, "level": level}
    for code in seen:
        for cut in (1, 3, 4, 5):
            if cut < len(code) and code[:cut] not in seen:
                sys.exit(f"{path}: {code} lacks its ancestor {code[:cut]}")
    n_substances = sum(1 for c in seen if len(c) == 7)
    if rewrite:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, ["code", "name", "level"], delimiter="\t", lineterminator="\n")
            w.writeheader()
            w.writerows(seen[c] for c in sorted(seen))
        os.replace(tmp, path)
    return n_substances


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only validate atc.tsv; write nothing")
    args = p.parse_args(argv)
    n_atc = check_atc(DATA / "atc.tsv", rewrite=not args.check)
    print(f"atc.tsv: ok, {n_atc} substances")
    if not args.check:
        n = write_icd10cm(DATA / "icd10cm.tsv.gz")
        print(f"icd10cm.tsv.gz: {n} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
