"""training.log: what the console shows goes to the log, and a run that stops says why there too."""

from __future__ import annotations

import pytest

from exmed_bert.errors import UserError, cli_entry
from exmed_bert.training.teelog import TeeLog


def test_console_lines_and_the_last_state_of_a_progress_bar_reach_the_log(tmp_path, capsys):
    log = tmp_path / "training.log"
    with TeeLog(log):
        print("epoch 1")
        print("10%\r50%\r100%")
    assert log.read_text().splitlines() == ["epoch 1", "100%"]
    assert "epoch 1" in capsys.readouterr().out


def test_a_refused_run_writes_its_error_to_the_log(tmp_path, capsys):
    """The command line prints the error after the tee closes; the log must not be left empty."""
    log = tmp_path / "training.log"

    @cli_entry
    def main(argv=None) -> int:
        with TeeLog(log):
            raise UserError("data/task.csv: no labelled patients in the train split")

    assert main([]) == 2
    assert log.read_text() == "error: data/task.csv: no labelled patients in the train split\n"
    assert "no labelled patients" in capsys.readouterr().err


def test_a_crash_is_named_in_the_log_and_an_interrupt_is_not(tmp_path):
    log = tmp_path / "training.log"
    with pytest.raises(ZeroDivisionError), TeeLog(log):
        1 / 0
    assert log.read_text().startswith("internal error: ZeroDivisionError: division by zero")
    with pytest.raises(KeyboardInterrupt), TeeLog(tmp_path / "other.log"):
        raise KeyboardInterrupt
    assert (tmp_path / "other.log").read_text() == ""
