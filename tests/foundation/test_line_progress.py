"""LineProgress: log lines when there is no terminal, nothing on one."""

import io
import re

from blockdistill.utils.progress import LineProgress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_count_units_and_give_an_eta_until_the_end():
    out = io.StringIO()
    p = LineProgress("decode", total=4, unit="ex", min_interval_s=0.0, stream=out)
    for _ in range(4):
        p.update(1, note="written 1")
    lines = out.getvalue().splitlines()
    assert [re.search(r"decode: (\d+)/4 ex", ln).group(1) for ln in lines] == ["1", "2", "3", "4"]
    assert all("ETA" in ln for ln in lines[:3]) and "ETA" not in lines[3]
    assert all(ln.endswith("; written 1") for ln in lines)
    assert re.match(r"\d\d:\d\d:\d\d decode", lines[0])


def test_the_interval_limits_lines_but_the_last_update_always_prints():
    out = io.StringIO()
    p = LineProgress("x", total=100, min_interval_s=3600.0, stream=out)
    for _ in range(100):
        p.update()
    assert p.lines == 1 and " 100/100 " in out.getvalue()


def test_nothing_is_printed_on_a_terminal():
    out = _Tty()
    p = LineProgress("x", total=2, min_interval_s=0.0, stream=out)
    p.update(2)
    assert out.getvalue() == "" and p.lines == 0
