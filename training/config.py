"""Training configuration files (TOML) merged with command-line overrides.

A file has a top-level ``model`` and one table per part::

    model = "sasrec"          # sasrec | twotower | bpr | pop
    [sasrec]  max_len, dim, layers, heads, dropout, ffn_mult, lowpass, lowpass_freqs,
              positions, causal, norm, id_dropout
    [twotower] max_len, dim, hidden, dropout, id_dropout
    [bpr]     dim, epochs, batch_size, lr, reg, patience
    [train]   epochs, batch_size, lr, weight_decay, loss, negatives, hard_negatives,
              impression_negatives, patience,
              max_minutes, refit, mask_seen, samples, ema, lr_plateau, lr_factor, seed, threads

Precedence: built-in defaults < file < flags. Unknown keys are errors.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from streamrec.errors import ConfigError
from training.models.baselines import BPRConfig
from training.models.retrieval import NORMS, POSITIONS, SASRecConfig, TwoTowerConfig
from training.models.train import SAMPLES, TrainConfig

MODELS = ("sasrec", "twotower", "bpr", "pop")
SEQUENCE_MODELS = ("sasrec", "twotower")  # trained by training.models.train, exported as bundles
CONFIG_DIR = Path(__file__).parent / "configs"
# the tower's sizes come from the attribute data, not from configuration
_DERIVED = {"num_items", "attributes", "max_attrs"}
_SASREC_KEYS = {f.name for f in fields(SASRecConfig)} - _DERIVED
_FLAG_NAMES = {"causal": "--causal/--bidirectional"}
_TABLES = {"sasrec": _SASREC_KEYS, "twotower": {f.name for f in fields(TwoTowerConfig)} - _DERIVED,
           "bpr": {f.name for f in fields(BPRConfig)},
           "train": {f.name for f in fields(TrainConfig)}}
# what each model reads: the sequence models their table and [train], BPR its own table
# (--epochs, --lr, … set both), popularity nothing; seed and threads go to every run
_READS = {"sasrec": _TABLES["sasrec"] | _TABLES["train"], "twotower": _TABLES["twotower"] | _TABLES["train"],
          "bpr": _TABLES["bpr"], "pop": set()}
_EVERY_RUN = {"seed", "threads"}


def _whole(value: Any, lowest: int) -> bool:
    """A whole number (a bool is not one) from ``lowest``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= lowest


def load_config(path: Path | None) -> dict[str, Any]:
    """Parse and check a config file; ``None`` gives an empty config (all defaults)."""
    if path is None:
        return {}
    try:
        cfg = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (shipped ones: "
                          f"{', '.join(p.name for p in sorted(CONFIG_DIR.glob('*.toml')))})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    for key, value in cfg.items():
        if key == "model":
            if value not in MODELS:
                raise ConfigError(f"{path.name}: model must be one of {MODELS}, not {value!r}")
        elif key in _TABLES:
            unknown = set(value) - _TABLES[key]
            if unknown:
                raise ConfigError(f"{path.name}: unknown key(s) {sorted(unknown)} in [{key}]; "
                                  f"known: {sorted(_TABLES[key])}")
        else:
            raise ConfigError(f"{path.name}: unknown table or key {key!r}")
    return cfg


def resolve(cfg: dict[str, Any], model: str | None, sasrec: dict[str, Any], train: dict[str, Any],
            bpr: dict[str, Any], twotower: dict[str, Any] | None = None,
            ) -> tuple[str, dict[str, Any], TrainConfig, BPRConfig]:
    """Merge file values with flag overrides (``None`` = not given). The model table
    returned is the chosen sequence model's (``[twotower]`` for ``twotower``)."""
    def pick(table: str, flags: dict[str, Any]) -> dict[str, Any]:
        return {**cfg.get(table, {}), **{k: v for k, v in flags.items() if v is not None}}

    chosen = model or cfg.get("model", "sasrec")
    try:
        tcfg = TrainConfig(**pick("train", train))
        bcfg = BPRConfig(**pick("bpr", bpr))
    except TypeError as e:
        raise ConfigError(str(e)) from None
    if tcfg.loss not in ("ce", "sampled", "bce"):
        raise ConfigError(f"loss must be ce, sampled or bce, not {tcfg.loss!r}")
    if isinstance(tcfg.ema, bool) or not isinstance(tcfg.ema, int | float) or not 0 <= tcfg.ema < 1:
        raise ConfigError(f"ema must be a number from 0 (off) to below 1, not {tcfg.ema!r}")
    if not _whole(tcfg.lr_plateau, 0):
        raise ConfigError(f"lr_plateau must be a whole number of epochs from 0 (off), not {tcfg.lr_plateau!r}")
    if (isinstance(tcfg.lr_factor, bool) or not isinstance(tcfg.lr_factor, int | float)
            or not 0 < tcfg.lr_factor < 1):
        raise ConfigError(f"lr_factor must be a number between 0 and 1 (exclusive), not {tcfg.lr_factor!r}")
    if tcfg.threads is not None and not _whole(tcfg.threads, 1):
        raise ConfigError(f"threads must be a whole number from 1, not {tcfg.threads!r}")
    if tcfg.lr_plateau >= tcfg.patience > 0:
        raise ConfigError(f"lr_plateau {tcfg.lr_plateau} must be below patience {tcfg.patience}: "
                          "the run stops before the first cut")
    if tcfg.samples not in SAMPLES:
        raise ConfigError(f"samples must be one of {', '.join(SAMPLES)}, not {tcfg.samples!r}")
    if tcfg.samples == "prefixes" and tcfg.impression_negatives:
        raise ConfigError("impression negatives are aligned with every position of a sequence: "
                          "use samples = \"positions\" with them")
    if chosen == "twotower":
        return chosen, pick("twotower", twotower or {}), tcfg, bcfg
    return chosen, pick("sasrec", sasrec), tcfg, bcfg


def _refuse_stray_flags(chosen: str, flags: dict[str, Any]) -> None:
    """A model or training flag the chosen model does not read (:data:`_READS`) is an
    error, not a silent no-op."""
    stray = sorted(k for k, v in flags.items() if v is not None and k not in _READS[chosen] | _EVERY_RUN
                   and any(k in keys for keys in _READS.values()))
    if stray:
        named = "; ".join(f"{_FLAG_NAMES.get(k, '--' + k.replace('_', '-'))} "
                          f"({' and '.join(m for m, keys in _READS.items() if k in keys)})" for k in stray)
        raise ConfigError(f"model {chosen} has no such setting: {named}. "
                          f"Drop the flag or choose a model that has it (--model)")


def resolve_flags(cfg: dict[str, Any], model: str | None, flags: dict[str, Any],
                  ) -> tuple[str, dict[str, Any], TrainConfig, BPRConfig]:
    """Like :func:`resolve`, with command-line flags named like config keys: each flag
    goes to every table that has a key of its name (``--dim`` sets SASRec's and BPR's)."""
    tables = {t: {k: v for k, v in flags.items() if k in keys} for t, keys in _TABLES.items()}
    chosen, mcfg, tcfg, bcfg = resolve(cfg, model, tables["sasrec"], tables["train"], tables["bpr"],
                                       tables["twotower"])
    _refuse_stray_flags(chosen, flags)
    dim, heads = mcfg.get("dim", 64), mcfg.get("heads", 2)
    if chosen == "sasrec" and dim % heads:
        raise ConfigError(f"dim {dim} must be divisible by heads {heads}")
    for key, default, choices in (("positions", "start", POSITIONS), ("norm", "pre", NORMS)):
        if chosen == "sasrec" and mcfg.get(key, default) not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, not {mcfg[key]!r}")
    ffn = mcfg.get("ffn_mult", 4)
    if chosen == "sasrec" and not _whole(ffn, 1):
        raise ConfigError(f"ffn_mult must be a whole number from 1, not {ffn!r}")
    causal = mcfg.get("causal", True)
    if chosen == "sasrec" and not isinstance(causal, bool):
        raise ConfigError(f"causal must be true or false, not {causal!r}")
    freqs = mcfg.get("lowpass_freqs", 0)
    if chosen == "sasrec" and freqs:
        most = mcfg.get("max_len", 50) // 2 + 1
        if not _whole(freqs, 1) or freqs > most:
            raise ConfigError(f"lowpass_freqs must be a whole number from 0 to max_len // 2 + 1 = {most}, "
                              f"not {freqs!r}")
        if not mcfg.get("lowpass"):
            raise ConfigError("lowpass_freqs shapes the low-pass branch: it needs lowpass > 0 (--lowpass)")
        if causal:
            raise ConfigError("lowpass_freqs reads the whole window: it needs bidirectional attention "
                              "(causal = false, --bidirectional)")
    if chosen == "sasrec" and not causal and tcfg.samples != "prefixes":
        raise ConfigError("bidirectional attention (causal = false) needs samples = \"prefixes\": "
                          f"with samples = {tcfg.samples!r} a position would read the items it must predict")
    return chosen, mcfg, tcfg, bcfg
