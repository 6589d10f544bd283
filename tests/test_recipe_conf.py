"""The AN4 recipe configs: every family composes by changing only ``model=``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from asrkit.cli import compose_train_config

RECIPE_CONF = Path(__file__).resolve().parent.parent / "recipes" / "an4" / "conf"
FAMILIES = ("transformer", "conformer", "cnn", "lstm")

torch.set_num_threads(1)


@pytest.mark.parametrize("size", ["quick", "full"])
@pytest.mark.parametrize("family", FAMILIES)
def test_recipe_config_per_family(size, family):
    """``conf=train_<size>.yaml model=<family>`` picks the family's class with the recipe's
    sizes from ``<size>/<family>.yaml``, keeps the shared optimiser/trainer settings, and the
    model runs a forward pass with a finite loss."""
    conf = RECIPE_CONF / f"train_{size}.yaml"
    cfg = compose_train_config([f"conf={conf}", f"model={family}", "exp_dir=x"])
    assert cfg.model._target_.split(".")[-2] == family
    default = compose_train_config([f"conf={conf}", "exp_dir=x"])
    assert cfg.trainer == default.trainer and cfg.optim == default.optim  # only model changed
    own = OmegaConf.load(RECIPE_CONF / size / f"{family}.yaml")
    for key, value in own.items():
        assert cfg.model[key] == value, key
    torch.manual_seed(0)
    model = instantiate(cfg.model, input_dim=80, vocab_size=40).train()
    feats, lens = torch.randn(2, 120, 80), torch.tensor([120, 90])
    targets, target_lens = torch.randint(3, 40, (2, 6)), torch.tensor([6, 4])
    loss = model(feats, lens, targets, target_lens)["loss"]
    assert torch.isfinite(loss)


def test_recipe_config_unknown_family_is_an_error():
    with pytest.raises(Exception, match="hmm_cnn|full"):
        compose_train_config([f"conf={RECIPE_CONF / 'train_full.yaml'}", "model=hmm_cnn",
                              "exp_dir=x"])


@pytest.mark.parametrize("size", ["quick", "full"])
def test_recipe_config_hmm_gmm(size):
    """``model=hmm_gmm`` composes with the recipe configs, and every stage option it sets is
    one the HMM-GMM trainer accepts."""
    from asrkit.models.hmm_gmm import LdaMlltOptions, MonoOptions, SatOptions, TriOptions
    from asrkit.train.gmm import STAGE_TYPES, _stage_options

    cfg = compose_train_config([f"conf={RECIPE_CONF / f'train_{size}.yaml'}", "model=hmm_gmm",
                                "exp_dir=x"])
    assert cfg.model.family == "hmm_gmm"
    stages = OmegaConf.to_container(cfg.model.stages)
    assert [s["type"] for s in stages.values()] == ["mono", "tri", "lda_mllt", "sat"]
    assert {s["type"] for s in stages.values()} <= set(STAGE_TYPES)
    keys = {"mono": MonoOptions, "tri": TriOptions, "lda_mllt": LdaMlltOptions,
            "sat": SatOptions}
    for name, st in stages.items():
        _stage_options(name, st, keys[st["type"]])
    own = OmegaConf.load(RECIPE_CONF / size / "hmm_gmm.yaml")
    for name, st in own.stages.items():
        for key, value in st.items():
            assert cfg.model.stages[name][key] == value
