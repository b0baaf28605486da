"""The guide's JSON: one document `{"patients": [...]}` (or a bare array), read as a stream of patient dicts.
A document cannot be cut at patient boundaries without reading it, so it is one piece: never in workers.
It takes any path no other format claims, so its errors name what is wrong with the file."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from exmed_bert.convert.args import ConvertArgs
from exmed_bert.convert.formats.base import Source
from exmed_bert.convert.records import iter_patients
from exmed_bert.errors import UserError


class JsonSource(Source):
    def __init__(self, path: Path, args: ConvertArgs, times: bool = False):
        super().__init__(path, args, times)
        if not path.exists():
            raise UserError(f"{path}: input not found; generate it with scripts/generate_synthetic_patients.py")

    @staticmethod
    def claims(path: Path) -> bool:
        return True

    def pieces(self, workers: int) -> list[Path]:
        return [self.path]

    def feed(self, run, piece) -> None:
        for obj in self.records():
            run.record(obj)

    def feed_all(self, run, bar) -> None:
        for obj in self.records():
            run.record(obj)
            bar.update()

    def records(self) -> Iterator[dict]:
        return iter_patients(self.path)
