"""Configuration mistakes end a command with exit status 2 and one line naming the key:
missing mandatory values, wrongly typed overrides, unknown keys (asrkit/cli.py)."""

from __future__ import annotations

import pytest

from asrkit.cli import ConfigError, compose_train_config, main


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_missing_value_names_the_key_and_what_it_expects(tmp_path, capsys):
    exp = tmp_path / "exp"
    line = _one_line_error(capsys, ["train", f"data.train={tmp_path}", f"exp_dir={exp}"])
    assert line == ("asrkit train: error: missing config value 'data.tokenizer': path to the "
                    "sentencepiece model, asrkit tokenizer output (set data.tokenizer=PATH)")
    assert not exp.exists()  # reported before anything was written
    line = _one_line_error(capsys, ["train-lm", "model=lstm_lm", f"data.tokenizer={tmp_path}",
                                    f"exp_dir={exp}"])
    assert "asrkit train-lm: error: missing config value 'data.train'" in line
    assert "set data.train=PATH" in line
    line = _one_line_error(capsys, ["train", "model=transformer"])
    assert line.startswith("asrkit train: error: missing config values: 'data.tokenizer'")
    assert "'data.train'" in line and "'exp_dir'" in line
    # model=hmm_gmm does not use a tokenizer: no complaint about it
    line = _one_line_error(capsys, ["train", "model=hmm_gmm", f"data.train={tmp_path}",
                                    f"exp_dir={exp}"])
    assert "tokenizer" not in line and "data.lang" in line


def test_missing_value_raised_inside_a_command_is_one_line():
    from omegaconf import OmegaConf

    from asrkit.config import config_error_message

    cfg = OmegaConf.create({"model": {"pretrained": "???"}})
    with pytest.raises(Exception) as e:
        _ = cfg.model.pretrained  # the access raises
    assert config_error_message(e.value) == ("missing config value 'model.pretrained': a value "
                                             "(set model.pretrained=VALUE)")
    assert config_error_message(ValueError("x")) is None


@pytest.mark.parametrize("argv", [
    ["train", "trainer.max_epochs=abc"],
    ["train", "--print-config", "trainer.max_epochs=abc"],
    ["train-lm", "model=lstm_lm", "trainer.max_epochs=abc"],
])
def test_wrongly_typed_override_names_key_value_and_type(capsys, argv):
    line = _one_line_error(capsys, argv)
    assert "wrong type for config value 'trainer.max_epochs'" in line
    assert "got 'abc'" in line and "expected an integer" in line


def test_override_types(capsys):
    line = _one_line_error(capsys, ["train", "trainer.amp=3"])
    assert "'trainer.amp'" in line and "expected a boolean (true or false)" in line
    line = _one_line_error(capsys, ["train", "trainer.keep_best_by=dev_loss"])
    assert "'trainer.keep_best_by'" in line and "expected a list" in line
    # what is right still composes: ints for floats, null, lists, strings for strings
    cfg = compose_train_config(["optim.optimizer.lr=1", "model.specaug=null",
                                "trainer.keep_best_by=[dev_loss]", "trainer.device=cpu",
                                "exp_dir=x"])
    assert cfg.optim.optimizer.lr == 1 and cfg.model.specaug is None


@pytest.mark.parametrize("argv", [
    ["train", "trainer.max_epoch=5"],
    ["train", "--print-config", "trainer.max_epoch=5"],
])
def test_unknown_key_names_it_and_the_close_match(capsys, argv):
    line = _one_line_error(capsys, argv)
    assert line == ("asrkit train: error: unknown config key 'trainer.max_epoch' (in "
                    "trainer.max_epoch=5); did you mean 'trainer.max_epochs'? (a new key needs "
                    "a '+': +trainer.max_epoch=5)")


def test_unknown_group_option_and_unparsable_override(capsys):
    line = _one_line_error(capsys, ["train", "model=transfomer"])
    assert "unknown option 'transfomer' for config group 'model'" in line
    assert "transformer" in line
    line = _one_line_error(capsys, ["train", "data.tokenizer"])
    assert "cannot parse override 'data.tokenizer'" in line and "KEY=VALUE" in line
    with pytest.raises(ConfigError, match="trainer.max_epoch"):
        compose_train_config(["trainer.max_epoch=5"])


def test_decode_key_value_options(capsys):
    line = _one_line_error(capsys, ["decode", "exp", "data", "decode.beem=4"])
    assert line == ("asrkit decode: error: unknown decode option 'decode.beem' (in decode.beem=4)"
                    "; did you mean 'decode.beam'?; see asrkit decode --help")
    line = _one_line_error(capsys, ["decode", "exp", "data", "decode.lm_weight=abc"])
    assert "'decode.lm_weight'" in line and "got 'abc'" in line and "expected a number" in line
    line = _one_line_error(capsys, ["decode", "exp", "data", "decode.method=greedy"])
    assert "'decode.method'" in line and "ctc_greedy" in line
