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


def test_compare_table_joins_hmm_gmm_and_neural_rows(tmp_path, capsys):
    """``--compare``: one table; an HMM-GMM row sums the training time of the stages it was
    built from (config order) and reads dev WER at the acoustic scale test was decoded with."""
    mod = _load()
    exp = tmp_path / "gmm"
    stages = {"mono": ("mono", 60.0), "tri1": ("tri", 30.0), "tri2": ("lda_mllt", 90.0)}
    for name, (kind, secs) in stages.items():
        (exp / name).mkdir(parents=True)
        (exp / name / "final.mdl").write_bytes(b"")
        (exp / name / "train_summary.json").write_text(json.dumps(
            {"type": kind, "num_pdfs": 140, "num_gauss": 1500, "train_seconds": secs}))
    (exp / "config.yaml").write_text(json.dumps({"model": {"stages": {k: {} for k in stages}}}))
    tri2 = exp / "tri2"
    (tri2 / "graph_kn3").mkdir()
    (tri2 / "graph_kn3" / "graph.json").write_text(json.dumps(
        {"lm": "data/lm/kn3.arpa", "lm_order": 3, "sizes": {"HCLG": [10, 30]}}))
    test, dev = tri2 / "decode_test_graph_kn3", tri2 / "decode_dev_graph_kn3_acwt0.067"
    for d, wer in ((test, 7.1), (dev, 5.0), (tri2 / "decode_dev_graph_kn3_acwt0.1", 4.0)):
        d.mkdir()
        (d / "score.json").write_text(json.dumps({"wer": {"rate": wer}, "cer": {"rate": 3.5}}))
    (test / "acwt").write_text("0.067\n")
    (test / "decode_summary.json").write_text(json.dumps({"rtf": 0.1, "device": "cpu"}))
    ctc = _exp(tmp_path, False)
    assert mod.main(["--compare", f"{tri2}:graph_kn3", str(ctc)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| system | decoding | dev WER % | test WER %")
    assert lines[2] == ("| gmm/tri2: HMM-GMM LDA+MLLT triphone (140 pdfs, 1500 Gaussians) | "
                        "HCLG, kn3.arpa (3-gram) | 5.0 | 7.1 | 3.5 | 3.0 min | 0.1000 (cpu) |")
    assert lines[3].startswith("| ctc: ConformerCTC (4.10 M params, 15 epochs) | ctc_greedy | - "
                               "| 12.3 | 8.0 | 50.0 min |")


def test_best_decode_picks_lowest_wer(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("best_decode", SCRIPT.parent / "best_decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dirs = []
    for name, wer in (("a", 5.0), ("b", 4.0), ("c", 4.0), ("unscored", None)):
        d = tmp_path / name
        d.mkdir()
        if wer is not None:
            (d / "score.json").write_text(json.dumps({"wer": {"rate": wer}}))
        dirs.append(str(d))
    assert mod.main(dirs) == 0
    assert capsys.readouterr().out.split() == [dirs[1], "4.0"]  # ties: the first listed
    assert mod.main([dirs[3]]) == 1


def test_compare_several_sets_and_dev_tuned_neural_decoding(tmp_path, capsys):
    """One WER column per ``--set``; a neural ``tlg_<lm>`` decoding tuned on ``--dev-set``
    reads its dev WER from the directory named in ``dev_best``."""
    mod = _load()
    exp = _exp(tmp_path, False)
    for part, wer in (("test_clean", 9.0), ("test_other", 21.0)):
        d = exp / f"decode_{part}_tlg_tg"
        d.mkdir()
        (d / "score.json").write_text(json.dumps({"wer": {"rate": wer}, "cer": {"rate": 4.0}}))
        (d / "decode_summary.json").write_text(json.dumps({"rtf": 0.02, "device": "cpu"}))
        (d / "dev_best").write_text("decode_dev_clean_tlg_tg_lm-weight0.5\n")
    dev = exp / "decode_dev_clean_tlg_tg_lm-weight0.5"
    dev.mkdir()
    (dev / "score.json").write_text(json.dumps({"wer": {"rate": 8.25}, "cer": {"rate": 3.0}}))
    assert mod.main(["--compare", "--dev-set", "dev_clean", "--set", "test_clean", "--set",
                     "test_other", f"{exp}:tlg_tg"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| system | decoding | dev_clean WER % | test_clean WER % | "
                               "test_other WER % | test_clean CER %")
    assert "| tlg_tg (lm-weight0.5) | 8.2 | 9.0 | 21.0 | 4.0 |" in lines[2]


def test_compare_rescored_columns(tmp_path, capsys):
    """``--rescored LM`` adds the dev and test WER after n-best rescoring with LM
    (``decode_<set>_<method>_rescore_<LM>``), "-" where a system has none."""
    mod = _load()
    exp = _exp(tmp_path, False)
    d = exp / "decode_test_tlg_tgsmall"
    d.mkdir()
    (d / "score.json").write_text(json.dumps({"wer": {"rate": 20.0}, "cer": {"rate": 9.0}}))
    (d / "decode_summary.json").write_text(json.dumps({"rtf": 0.02, "device": "cpu"}))
    for part, wer in (("dev", 15.55), ("test", 18.04)):
        r = exp / f"decode_{part}_tlg_tgsmall_rescore_fg"
        r.mkdir()
        (r / "score.json").write_text(json.dumps({"wer": {"rate": wer}, "cer": {"rate": 1.0}}))
    assert mod.main(["--compare", "--rescored", "fg", f"{exp}:tlg_tgsmall", str(exp)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("| decoding RTF | dev WER % rescored fg | test WER % rescored fg |")
    assert lines[1].count("---") == lines[0].count("|") - 1
    assert lines[2].endswith("| 20.0 | 9.0 | 50.0 min | 0.0200 (cpu) | 15.6 | 18.0 |")
    assert lines[3].endswith("(cpu, 1 thr) | - | - |")  # ctc_greedy: not rescored


def test_compare_row_of_a_hybrid_reads_its_gmm_graph(tmp_path, capsys, monkeypatch):
    """A model=hybrid exp dir: its own training summary and decodes, the graph (and so the
    LM) of the GMM stage whose HCLG it decoded with, named in decode_summary.json."""
    mod = _load()
    monkeypatch.chdir(tmp_path)
    graph = Path("exp/gmm/tri3/graph_kn3")
    graph.mkdir(parents=True)
    (graph / "graph.json").write_text(json.dumps(
        {"lm": "data/lm/kn3.arpa", "lm_order": 3, "sizes": {"HCLG": [10, 30]}}))
    hyb = Path("exp/gmm_hybrid_tri3")
    (hyb / "final.mdl").parent.mkdir(parents=True)
    (hyb / "final.mdl").write_bytes(b"")
    (hyb / "config.yaml").write_text(json.dumps(
        {"model": {"family": "hybrid", "encoder": "tdnn"}, "data": {"alignment": "exp/gmm/tri3"}}))
    (hyb / "train_summary.json").write_text(json.dumps(
        {"num_params": 2350222, "epochs": 30, "train_seconds": 900.0}))
    test, dev = hyb / "decode_test_graph_kn3", hyb / "decode_dev_graph_kn3_acwt0.15"
    for d, wer in ((test, 4.01), (dev, 2.85)):
        d.mkdir()
        (d / "score.json").write_text(json.dumps({"wer": {"rate": wer}, "cer": {"rate": 3.0}}))
    (test / "dev_best").write_text(dev.name + "\n")
    (test / "decode_summary.json").write_text(json.dumps(
        {"rtf": 0.0757, "device": "cpu", "threads": 1, "graph": str(graph / "HCLG.fst")}))
    assert mod.main(["--compare", f"{hyb}:graph_kn3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == ("| gmm_hybrid_tri3: hybrid DNN-HMM, tdnn (2.35 M params, 30 epochs) on "
                        "exp/gmm/tri3 alignments | HCLG of tri3, kn3.arpa (3-gram) | 2.9 | 4.0 | "
                        "3.0 | 15.0 min | 0.0757 (cpu, 1 thr) |")
    with pytest.raises(SystemExit, match="needs :GRAPH"):
        mod.main(["--compare", str(hyb)])
