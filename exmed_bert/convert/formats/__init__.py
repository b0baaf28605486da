"""Input formats, one module each (a `base.Source` subclass). Adding a format is its module plus one line
in FORMATS, which lists them in the order they are asked (`detect`): formats that know their paths by
name or folder first; the guide's JSON last, as it takes any other file."""

from __future__ import annotations

from pathlib import Path

from exmed_bert.convert.formats.base import Source
from exmed_bert.convert.formats.guide_json import JsonSource
from exmed_bert.convert.formats.jsonl import JsonlSource
from exmed_bert.convert.formats.meds import MedsSource

FORMATS: tuple[type[Source], ...] = (
    MedsSource,    # a folder or a .parquet file
    JsonlSource,   # .jsonl / .ndjson, or a file whose first object is a patient
    JsonSource,    # {"patients": [...]}: any other path
)


def detect(path: str | Path) -> type[Source]:
    """The format of the input at `path`."""
    path = Path(path)
    return next(fmt for fmt in FORMATS if fmt.claims(path))


def event_times_in(manifest: dict) -> bool:
    """Whether the conversion of `manifest` read event times (its input format has them). Known from the
    manifest, not from the input path: task datasets of an input that has since moved are still reused."""
    return any(fmt.event_times and fmt.made(manifest) for fmt in FORMATS)
