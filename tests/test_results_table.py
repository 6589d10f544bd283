"""scripts/results_table.py builds its rows from the files the stages write."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "results_table.py"


def _load():
    spec = importlib.util.spec_from_file_location("results_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _exp(root: Path, decoder: bool) -> Path:
    exp = root / ("hyb" if decoder else "ctc")
    dec = exp / "decode_test_joint_ctc_attention" if decoder else exp / "decode_test_ctc_greedy"
    dec.mkdir(parents=True)
    model = {"_target_": "asrkit.models.conformer.ConformerCTC", "ctc_weight": 0.3 if decoder
             else 1.0, "decoder": {"type": "transformer"} if decoder else None}
    (exp / "config.yaml").write_text(json.dumps({"model": model}))  # JSON is valid YAML
    (exp / "train_summary.json").write_text(json.dumps(
        {"num_params": 4101830, "epochs": 15, "train_seconds": 3000.0}))
    (dec / "score.json").write_text(json.dumps({"wer": {"rate": 12.345}, "cer": {"rate": 8.0}}))
    (dec / "decode_summary.json").write_text(json.dumps(
        {"rtf": 0.01234, "device": "cpu", "threads": 1}))
    return exp


def test_rows_come_from_stage_files(tmp_path, capsys):
    mod = _load()
    ctc, hyb = _exp(tmp_path, False), _exp(tmp_path, True)
    out = tmp_path / "table.md"
    assert mod.main([str(ctc), f"{hyb}:joint_ctc_attention", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines == capsys.readouterr().out.splitlines() and len(lines) == 4
    assert lines[2] == ("| ctc | ConformerCTC | ctc_greedy | 12.3 | 8.0 | 4.10 M | 15 | "
                        "50.0 min | 0.0123 (cpu, 1 thr) |")
    assert "ConformerCTC + transformer decoder (ctc_weight 0.3) | joint_ctc_attention" in lines[3]


def test_missing_file_names_it(tmp_path):
    mod = _load()
    exp = _exp(tmp_path, False)
    (exp / "decode_test_ctc_greedy" / "score.json").unlink()
    with pytest.raises(SystemExit, match="score.json"):
        mod.main([str(exp)])


def test_hmm_gmm_rows_come_from_stage_files(tmp_path, capsys):
    mod = _load()
    stage = tmp_path / "gmm" / "tri1"
    dec = stage / "decode_test_graph_kn3"
    dec.mkdir(parents=True)
    (stage / "final.mdl").write_bytes(b"")
    (stage / "train_summary.json").write_text(json.dumps(
        {"type": "tri", "num_pdfs": 444, "num_gauss": 10012, "train_seconds": 300.0}))
    (stage / "graph_kn3").mkdir()
    (stage / "graph_kn3" / "graph.json").write_text(json.dumps(
        {"lm": "data/lm/kn3.arpa", "lm_order": 3, "sizes": {"HCLG": [100, 300]}}))
    (dec / "score.json").write_text(json.dumps({"wer": {"rate": 5.04}, "cer": {"rate": 3.0}}))
    (dec / "decode_summary.json").write_text(json.dumps(
        {"rtf": 0.05, "device": "cpu", "threads": 1, "acoustic_scale": 0.083}))
    assert mod.main([f"{stage}:graph_kn3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| stage | model | pdfs / Gaussians")
    assert lines[2] == ("| gmm/tri1 | triphone (tree) | 444 / 10012 | kn3.arpa (3-gram) | "
                        "100 / 300 | 0.083 | 5.0 | 5.0 min | 0.0500 (cpu, 1 thr) |")
    with pytest.raises(SystemExit, match="needs :GRAPH"):
        mod.main([str(stage)])
