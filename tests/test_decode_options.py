"""The options objects of the decoding methods (asrkit.decode.options), the conf/decode/ group
and `asrkit decode decode=NAME`."""

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from asrkit.cli import main
from asrkit.decode.options import (
    METHODS,
    AttentionBeamOptions,
    CtcGreedyOptions,
    CtcPrefixBeamOptions,
    FlashlightOptions,
    JointCtcAttentionOptions,
    LlmBeamOptions,
    LmFusionOptions,
    WfstOptions,
    decode_options,
    read_decode_config,
)
from asrkit.decode.run import decode_data_dir

CONF = Path(__file__).resolve().parents[1] / "conf" / "decode"


def test_each_method_gets_its_own_class_and_defaults():
    kinds = {m: type(decode_options(m, graph="g")[0]) for m in METHODS}
    assert kinds == {"ctc_greedy": CtcGreedyOptions, "ctc_prefix_beam": CtcPrefixBeamOptions,
                     "attention_beam": AttentionBeamOptions,
                     "joint_ctc_attention": JointCtcAttentionOptions, "wfst": WfstOptions,
                     "llm_beam": LlmBeamOptions}
    assert type(decode_options("ctc_prefix_beam", "flashlight")[0]) is FlashlightOptions
    joint, lm = decode_options("joint_ctc_attention")
    assert (joint.beam, joint.ctc_weight, joint.nbest, lm) == (10, 0.3, 1, None)
    wfst, _ = decode_options("wfst", graph="g")
    assert (wfst.beam, wfst.max_active, wfst.lm_weight) == (16.0, 7000, 0.5)  # cost units
    # None means "the default": what a CLI passes for an option not given
    assert decode_options("ctc_prefix_beam", beam=None, nbest=None)[0] == CtcPrefixBeamOptions()


def test_lm_options_go_with_the_lm():
    opts, lm = decode_options("ctc_prefix_beam", beam=4, lm="x.arpa", lm_weight=0.2,
                              word_bonus=1.0, extra_lms=[("y", 0.1)])
    assert opts == CtcPrefixBeamOptions(beam=4)
    assert lm == LmFusionOptions("x.arpa", 0.2, 1.0, [("y", 0.1)])
    assert lm.summary()["extra_lms"] == [["y", 0.1]]
    wfst, lm = decode_options("wfst", graph="g", lm_weight=0.3)  # the graph LM's weight
    assert wfst.lm_weight == 0.3 and lm is None


@pytest.mark.parametrize("method,values,match", [
    ("ctc_greedy", {"nbest": 2}, "nbest > 1 needs a beam method"),
    ("ctc_prefix_beam", {"beam": 2, "nbest": 3}, "nbest must be between 1 and the beam"),
    ("ctc_prefix_beam", {"beam": 0}, "beam must be"),
    ("ctc_prefix_beam", {"beam": 2.5}, "whole number"),
    ("ctc_prefix_beam", {"token_topk": 0}, "token_topk"),
    ("joint_ctc_attention", {"ctc_weight": 1.5}, "ctc_weight"),
    ("attention_beam", {"maxlen_ratio": 0}, "maxlen_ratio"),
    ("llm_beam", {"beam": 2, "nbest": 3}, "nbest must be between 1 and the beam"),
    ("llm_beam", {"max_new_tokens": 0}, "max_new_tokens"),
    ("llm_beam", {"lm": "x.arpa"}, "llm_beam fuses no LM"),
    ("wfst", {}, "needs a graph"),
    ("wfst", {"graph": "g", "lm_weight": 0}, "lm_weight must be > 0"),
    ("wfst", {"graph": "g", "lm": "x.arpa"}, "takes its LM from the graph"),
    ("ctc_greedy", {"lm": "x.arpa"}, "needs a beam method"),
    ("ctc_prefix_beam", {"lexicon": "w.txt"}, "lexicon needs backend flashlight"),
    ("ctc_prefix_beam", {"extra_lms": [("y", 0.1)]}, "extra_lms need lm"),
    ("greedy", {}, "unknown decoding method"),
])
def test_bad_values_are_refused_with_the_option_named(method, values, match):
    with pytest.raises(ValueError, match=match):
        decode_options(method, **values)


def test_backend_and_unknown_names():
    with pytest.raises(ValueError, match="flashlight implements ctc_prefix_beam"):
        decode_options("attention_beam", "flashlight")
    with pytest.raises(ValueError, match="unknown backend"):
        decode_options("ctc_greedy", "kaldi")
    with pytest.raises(TypeError, match="beem"):
        decode_options("ctc_prefix_beam", beem=4)


def test_options_of_another_method_are_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="asrkit.decode.options"):
        opts, _ = decode_options("ctc_prefix_beam", ctc_weight=0.5, beam=4)
    assert opts == CtcPrefixBeamOptions(beam=4)
    assert "ctc_prefix_beam ignores option(s) ctc_weight" in caplog.text
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.beam = 5


def test_conf_decode_group_covers_every_method_and_builds():
    names = sorted(p.stem for p in CONF.glob("*.yaml"))
    assert names == sorted([*METHODS, "flashlight"])
    for name in names:
        values = read_decode_config(name)
        extra = {"graph": "g"} if values.get("method") == "wfst" else {}
        opts, _ = decode_options(**values, **extra)
        assert opts.method == values["method"]
    assert read_decode_config(CONF / "wfst.yaml") == read_decode_config("wfst")


def test_bad_decode_config_files_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ctc_prefix_beam\nbeem: 4\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown decode option\(s\) \['beem'\]"):
        read_decode_config(bad)
    bad.write_text("method: greedy\n")
    with pytest.raises(ValueError, match="bad.yaml: method 'greedy'"):
        read_decode_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(TypeError, match="bad.yaml: a decode config is a mapping"):
        read_decode_config(bad)
    with pytest.raises(FileNotFoundError, match="no decode config 'nope'.*joint_ctc_attention"):
        read_decode_config("nope")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.synth import train_tiny_ctc

    return train_tiny_ctc(tmp_path_factory.mktemp("options"), n_train=16, n_dev=4, epochs=1)


def test_cli_decode_config_with_overrides_equals_the_api(tiny, tmp_path):
    exp, dev = tiny["exp"], tiny["dev"]
    conf = tmp_path / "mine.yaml"
    conf.write_text("method: ctc_prefix_beam\nbeam: 6\nnbest: 2\n")
    out = tmp_path / "cli"
    assert main(["decode", str(exp), str(dev), f"decode={conf}", "decode.beam=3",
                 "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "decode_summary.json").read_text())
    assert (summary["method"], summary["beam"], summary["options"]["nbest"]) == (
        "ctc_prefix_beam", 3, 2)  # the command line overrides the file
    api = decode_data_dir(exp, dev, tmp_path / "api", device="cpu",
                          opts=CtcPrefixBeamOptions(beam=3, nbest=2))
    assert api.text.read_text() == (out / "text").read_text()
    assert api.nbest.read_text() == (out / "nbest").read_text()
    with pytest.raises(TypeError, match="either opts or options"):
        decode_data_dir(exp, dev, tmp_path / "x", opts=CtcGreedyOptions(), beam=3)


def test_cli_decode_config_errors_name_the_file(tiny, tmp_path, capsys):
    conf = tmp_path / "typo.yaml"
    conf.write_text("method: ctc_prefix_beam\nbeem: 6\n")
    assert main(["decode", str(tiny["exp"]), str(tiny["dev"]), f"decode={conf}",
                 "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "typo.yaml: unknown decode option(s) ['beem']" in capsys.readouterr().err
