"""``RunPaths``: which block sizes of a stage a rerun trains again (both examples' RAD stage)."""

from __future__ import annotations

from types import SimpleNamespace

from examples.echo_cxr.workspace import RunPaths


def test_pending_sizes_skips_only_finished_sub_stages(tmp_path) -> None:
    ws = RunPaths(SimpleNamespace(run_dir=str(tmp_path)))
    for name in ("rad_L4", "rad_L8"):           # both saved a model ...
        ws.model_dir(name).mkdir(parents=True)
        (ws.model_dir(name) / "config.json").write_text("{}")
    ws.mark_finished("rad_L4", {"wall_s": 1.0})  # ... but only L=4 was marked done
    out: dict = {}
    assert list(ws.pending_sizes("rad", [2, 4, 8], out)) == [(2, "rad_L2"), (8, "rad_L8")]
    assert out == {"rad_L4": "kept"}
    assert (tmp_path / "rad_L4" / "DONE").read_text() == '{"wall_s": 1.0}'
