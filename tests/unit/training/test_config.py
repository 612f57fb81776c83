"""Unit tests of :mod:`training.config`."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.errors import ConfigError
from training.config import CONFIG_DIR, load_config, resolve


def test_shipped_configs_load() -> None:
    for name in ("default.toml", "beauty.toml", "lastfm.toml"):
        cfg = load_config(CONFIG_DIR / name)
        model, sasrec, train, _ = resolve(cfg, None, {}, {}, {})
        assert model == "sasrec" and sasrec["max_len"] >= 50 and train.max_minutes is not None


def test_flags_override_file_values(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('model = "sasrec"\n[sasrec]\ndim = 32\nheads = 2\n[train]\nlr = 0.01\nepochs = 5\n')
    model, sasrec, train, bpr = resolve(load_config(p), "bpr", {"dim": 48, "heads": None},
                                        {"epochs": 7}, {"dim": 16})
    assert model == "bpr" and sasrec == {"dim": 48, "heads": 2}
    assert train.lr == 0.01 and train.epochs == 7 and bpr.dim == 16


@pytest.mark.parametrize(("text", "message"), [
    ('[train]\nepochz = 3\n', "unknown key(s) ['epochz'] in [train]"),
    ('model = "gru"\n', "model must be one of"),
    ('[trian]\n', "unknown table or key 'trian'"),
    ('[train\n', "c.toml"),
    ("[train]\nlr_plateau = -1\n", "lr_plateau must be a whole number of epochs from 0 (off), not -1"),
    ("[train]\nlr_plateau = 2.5\n", "lr_plateau must be a whole number of epochs from 0 (off), not 2.5"),
    ("[train]\nlr_plateau = true\n", "lr_plateau must be a whole number of epochs from 0 (off), not True"),
    ("[train]\nlr_factor = 1.0\n", "lr_factor must be a number between 0 and 1 (exclusive), not 1.0"),
    ("[train]\nlr_factor = 0\n", "lr_factor must be a number between 0 and 1 (exclusive), not 0"),
    ("[train]\nlr_plateau = 10\n", "lr_plateau 10 must be below patience 10: the run stops before the first cut"),
    ("[train]\nthreads = 0\n", "threads must be a whole number from 1, not 0"),
    ("[train]\nthreads = 1.5\n", "threads must be a whole number from 1, not 1.5"),
])
def test_bad_config_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        resolve(load_config(p), None, {}, {}, {})


def test_bad_loss_is_rejected() -> None:
    with pytest.raises(ConfigError, match="loss must be"):
        resolve({}, None, {}, {"loss": "mse"}, {})



@pytest.mark.parametrize(("key", "in_file", "by_flag", "message"), [
    ("positions", "end", "start", "positions must be one of end, start, not 'middle'"),
    ("norm", "post", "pre", "norm must be one of pre, post, not 'middle'"),
])
def test_a_choice_comes_from_the_file_or_a_flag_and_bad_ones_are_refused(
        tmp_path: Path, key: str, in_file: str, by_flag: str, message: str) -> None:
    from training.config import resolve_flags

    p = tmp_path / "c.toml"
    p.write_text(f'[sasrec]\n{key} = "{in_file}"\n')
    assert resolve_flags(load_config(p), None, {})[1][key] == in_file
    assert resolve_flags(load_config(p), None, {key: by_flag})[1][key] == by_flag
    p.write_text(f'[sasrec]\n{key} = "middle"\n')
    with pytest.raises(ConfigError, match=message):
        resolve_flags(load_config(p), None, {})


def test_ffn_mult_must_be_a_whole_number_from_one(tmp_path: Path) -> None:
    from training.config import resolve_flags

    p = tmp_path / "c.toml"
    for bad in ("1.5", "0", "true"):
        p.write_text(f"[sasrec]\nffn_mult = {bad}\n")
        with pytest.raises(ConfigError, match=f"ffn_mult must be a whole number from 1, not {bad.title()}"):
            resolve_flags(load_config(p), None, {})


def test_bidirectional_attention_needs_prefix_samples_and_a_boolean(tmp_path: Path) -> None:
    from training.config import resolve_flags

    p = tmp_path / "c.toml"
    p.write_text('[sasrec]\ncausal = false\n[train]\nsamples = "prefixes"\n')
    assert resolve_flags(load_config(p), None, {})[1]["causal"] is False
    assert resolve_flags(load_config(p), None, {"causal": True})[1]["causal"] is True
    with pytest.raises(ConfigError, match="needs samples = \"prefixes\": with samples = 'positions'"):
        resolve_flags(load_config(p), None, {"samples": "positions"})
    p.write_text('[sasrec]\ncausal = "no"\n')
    with pytest.raises(ConfigError, match="causal must be true or false, not 'no'"):
        resolve_flags(load_config(p), None, {})


def test_training_refuses_bidirectional_attention_without_prefix_samples(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from training.models.train import TrainConfig
    from training.pipeline import train_and_export

    with pytest.raises(ValueError, match="bidirectional attention needs prefix samples, not 'positions'"):
        train_and_export(tiny_data, Path("/nonexistent/never-written"), {"max_len": 20, "dim": 16, "causal": False},
                         TrainConfig(epochs=1, batch_size=64), progress=False)


@pytest.mark.parametrize(("flags", "message"), [
    ({"lowpass_freqs": 4}, "it needs lowpass > 0"),
    ({"lowpass_freqs": 4, "lowpass": 0.5, "causal": True}, "it needs bidirectional attention"),
    ({"lowpass_freqs": 27, "lowpass": 0.5}, "from 0 to max_len // 2 \\+ 1 = 26, not 27"),
    ({"lowpass_freqs": 2.5, "lowpass": 0.5}, "a whole number .* not 2.5"),
])
def test_a_frequency_filter_is_checked_before_any_data_is_read(flags: dict[str, object], message: str) -> None:
    from training.config import resolve_flags

    base = {"causal": False, "samples": "prefixes", "max_len": 50}
    with pytest.raises(ConfigError, match=message):
        resolve_flags({}, None, {**base, **flags})
    assert resolve_flags({}, None, {**base, "lowpass": 0.5, "lowpass_freqs": 26})[1]["lowpass_freqs"] == 26


@pytest.mark.parametrize("bad", ["1.0", "-0.1", "true", '"0.9"'])
def test_a_weight_average_decay_must_be_below_one(tmp_path: Path, bad: str) -> None:
    from training.config import resolve_flags

    p = tmp_path / "c.toml"
    p.write_text(f"[train]\nema = {bad}\n")
    with pytest.raises(ConfigError, match="ema must be a number from 0"):
        resolve_flags(load_config(p), None, {})
    p.write_text("[train]\nema = 0.999\n")
    assert resolve_flags(load_config(p), None, {})[2].ema == 0.999


@pytest.mark.parametrize(("model", "flags", "message"), [
    ("twotower", {"norm": "post", "causal": False, "dim": 32},
     "model twotower has no such setting: --causal/--bidirectional (sasrec); --norm (sasrec)"),
    ("twotower", {"ffn_mult": 4, "heads": 4}, "--ffn-mult (sasrec); --heads (sasrec)"),
    ("bpr", {"max_len": 20, "dim": 8}, "model bpr has no such setting: --max-len (sasrec and twotower)"),
    ("pop", {"dim": 8}, "model pop has no such setting: --dim (sasrec and twotower and bpr)"),
    ("bpr", {"ema": 0.9, "lr_plateau": 3, "epochs": 5},
     "model bpr has no such setting: --ema (sasrec and twotower); --lr-plateau (sasrec and twotower)"),
    ("pop", {"epochs": 5, "seed": 3}, "model pop has no such setting: --epochs (sasrec and twotower and bpr)"),
])
def test_a_model_flag_the_chosen_model_lacks_is_refused(model: str, flags: dict[str, object], message: str) -> None:
    from training.config import resolve_flags

    with pytest.raises(ConfigError) as caught:
        resolve_flags({}, model, flags)
    assert message in str(caught.value)
    # the same flags left unset, or given to a model that has them, are accepted
    assert resolve_flags({}, model, dict.fromkeys(flags))[0] == model
    assert resolve_flags({}, "sasrec", {**flags, "samples": "prefixes"})[0] == "sasrec"


def test_a_plateau_schedule_comes_from_the_file_or_a_flag(tmp_path: Path) -> None:
    from training.config import resolve_flags

    p = tmp_path / "c.toml"
    p.write_text("[train]\nlr_plateau = 3\nlr_factor = 0.3\n")
    tcfg = resolve_flags(load_config(p), None, {"lr_factor": 0.2})[2]
    assert (tcfg.lr_plateau, tcfg.lr_factor) == (3, 0.2)
