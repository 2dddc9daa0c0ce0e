"""Typed configuration: recipes (TOML) → dataclasses, command-line overrides, JSON round trip.

A recipe holds one experiment: ``[data]`` for ``mtkit preprocess``, ``[model]`` and ``[train]``
for ``mtkit train``. Unknown sections or keys are refused with their name, so a typo never passes
silently. The resolved configuration is saved as ``config.json`` beside the model.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtkit.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, published as tomli before it joined the standard library
    import tomli as tomllib


def _choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


def _range(default: Any, low: float, high: float | None = None) -> Any:
    """A number that must lie in [low, high] (high open when None)."""
    return field(default=default, metadata={"range": (low, high)})


@dataclass
class DataConfig:
    """How ``mtkit preprocess`` turns raw pairs into a data directory."""

    src_lang: str = "en"
    tgt_lang: str = "fr"
    reverse: bool = False
    normalize: str = _choice("clean", "clean", "book", "book-cased")
    tokenizer: str = _choice("sentencepiece", "word", "sentencepiece")
    min_freq: int = _range(2, 1)
    vocab_size: int = _range(8000, 8)
    sp_model: str = _choice("unigram", "unigram", "bpe")
    spm_sample: int = _range(2_000_000, 1)  # SentencePiece trains on at most this many sentences per side
    spm_sample_mb: int = _range(32, 1)  # ... and at most this many MB of text per side: its trainer needs ~21 bytes a character
    joint_vocab: bool = False
    vocab_with_dev: bool = False  # the book builds its vocabularies on train + validation
    max_examples: int | None = _range(None, 1)
    max_len: int | None = _range(None, 1)
    split: str = _choice("grouped", "grouped", "ordered")
    dev_size: int = _range(1000, 0)
    test_size: int = _range(2000, 0)
    seed: int = 1


@dataclass
class ModelConfig:
    """The encoder-decoder architecture; ``translate`` rebuilds exactly this from config.json.
    The defaults (and TrainConfig's optimiser settings) are the best recipe's, the Makefile's
    RECIPE; tests/test_recipes.py holds them to it."""

    cell: str = _choice("gru", "gru", "lstm")
    impl: str = _choice("fused", "fused", "scratch")
    embed: int = _range(256, 1)
    hidden: int = _range(256, 1)
    layers: int = _range(1, 1)
    decoder_layers: int | None = _range(None, 1)
    bidirectional: bool = True
    bridge: str = _choice("linear", "last", "linear", "zero")
    attention: str = _choice("bahdanau", "none", "bahdanau", "luong")
    attention_score: str = _choice("general", "general", "dot")
    context_input: bool = False  # luong: also feed the book's fixed context c to the decoder
    dropout: float = _range(0.0, 0.0, 0.99)
    tie_embeddings: bool = False
    # The book's procedure, each off by default (recipes/d2l.toml turns them on):
    source_steps: int | None = _range(None, 1)  # encode sources padded or cut to N tokens, over the <pad>s
    decode_steps: int | None = _range(None, 1)  # predict at most N tokens (then <eos>) by default
    output_init: str = _choice("xavier", "xavier", "pytorch")  # the output layer's initialisation

    def length_limit(self, a: float | None = None, b: int | None = None) -> tuple[float, int]:
        """The search's output limit a·|source| + b tokens, <eos> included: as given, else
        ``decode_steps`` (and <eos>) for a model that has them, else 2·|source| + 10."""
        if a is None and b is None and self.decode_steps:
            return 0.0, self.decode_steps + 1
        return (2.0 if a is None else a), (10 if b is None else b)


@dataclass
class TrainConfig:
    """Optimisation, batching, limits, validation and checkpoints for ``mtkit train``."""

    batch_size: int | None = _range(None, 1)  # per process, as batch_tokens
    batch_tokens: int | None = _range(2500, 1)
    accumulate: int = _range(1, 1)  # batches per process summed into one update
    lr: float = _range(0.003, 0.0)
    schedule: str = _choice("linear", "constant", "linear", "inverse-sqrt", "plateau")
    warmup: int = _range(0, 0)
    plateau_factor: float = _range(0.5, 0.0, 1.0)
    plateau_patience: int = _range(2, 1)
    clip_norm: float = _range(1.0, 0.0)
    label_smoothing: float = _range(0.0, 0.0, 0.99)
    max_epochs: int | None = _range(None, 1)
    max_steps: int | None = _range(None, 1)
    max_time: float | None = None
    truncate: int | None = _range(None, 2)
    shuffled_batches: bool = False  # the book's: batch_size sentences in a random order, not length buckets
    valid_every: int | None = _range(None, 1)
    valid_beam: int = _range(1, 1)
    stop_on: str = _choice("bleu", "bleu", "chrf", "loss")
    patience: int | None = _range(None, 1)
    save_every: int | None = _range(None, 1)
    keep_checkpoints: int = _range(5, 0)
    seed: int = 1
    device: str = "auto"
    precision: str = _choice("auto", "auto", "fp32", "bf16", "fp16")
    log_every: int = _range(100, 1)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str = "config") -> Recipe:
        unknown = set(raw) - set(SECTIONS)
        if unknown:
            raise UsageError(f"{origin}: unknown section [{sorted(unknown)[0]}]; expected {', '.join(SECTIONS)}")
        recipe = cls()
        for section, values in raw.items():
            if not isinstance(values, dict):
                raise UsageError(f"{origin}: [{section}] must be a table of settings")
            for key, value in values.items():
                set_option(recipe, f"{section}.{key}", value, origin)
        return recipe


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"recipe not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a valid TOML recipe ({exc})") from None


def load_recipe(path: str | Path | None) -> Recipe:
    """A recipe file's settings over mtkit's defaults (the defaults alone for None)."""
    return Recipe() if path is None else Recipe.from_dict(read_toml(path), str(path))


def recipe_keys(path: str | Path | None, section: str) -> set[str]:
    """The settings a recipe file gives in ``section`` (none for no file)."""
    return set(read_toml(path).get(section, {})) if path is not None else set()


def data_differences(expected: DataConfig, made_with: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """``key value (recipe: value)`` for each of ``keys`` where a data directory's settings
    (``made_with``, from its manifest) differ from ``expected``."""
    return [
        f"{key} {made_with.get(key)!r} (recipe: {getattr(expected, key)!r})"
        for key in sorted(keys) if made_with.get(key) != getattr(expected, key)
    ]


def field_type(section_cls: type, name: str) -> tuple[type, bool]:
    """The base type of a config field and whether it may be None."""
    hint = typing.get_type_hints(section_cls)[name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        base = next(a for a in args if a is not type(None))
        return base, type(None) in args
    return hint, False


def set_option(recipe: Recipe, dotted: str, value: Any, origin: str = "command line") -> None:
    """Set ``section.key`` to ``value`` (a typed value, or a string from the command line)."""
    section, _, key = dotted.partition(".")
    section_cls = SECTIONS.get(section)
    if section_cls is None or key not in {f.name for f in dataclasses.fields(section_cls)}:
        raise UsageError(f"{origin}: unknown option {dotted!r}")
    target = getattr(recipe, section)
    value = coerce(section_cls, key, value, f"{origin}: {dotted}")
    setattr(target, key, value)
    # Two ways to size a batch: the one set last wins.
    if section == "train" and key in _BATCH_ALTERNATIVES and value is not None:
        setattr(target, _BATCH_ALTERNATIVES[key], None)


_BATCH_ALTERNATIVES = {"batch_size": "batch_tokens", "batch_tokens": "batch_size"}


def coerce(section_cls: type, key: str, value: Any, where: str) -> Any:
    base, optional = field_type(section_cls, key)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if not optional:
            raise UsageError(f"{where} cannot be empty")
        return None
    if key == "max_time":
        seconds = parse_duration(value, where)
        if seconds <= 0:
            raise UsageError(f"{where}: the time limit must be positive")
        return seconds
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = value.lower() in ("true", "1", "yes")
            elif not isinstance(value, bool):
                raise ValueError
        elif base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(value)
        elif base is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif base is str:
            if not isinstance(value, str):
                raise ValueError
    except ValueError:
        raise UsageError(f"{where}: expected {base.__name__}, got {value!r}") from None
    metadata = next(f.metadata for f in dataclasses.fields(section_cls) if f.name == key)
    choices = metadata.get("choices")
    if choices and value not in choices:
        raise UsageError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    low, high = metadata.get("range", (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise UsageError(f"{where}: {value!r} must be {bounds}")
    return value


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration(value: Any, where: str = "duration") -> float:
    """Seconds from ``600``, ``90s``, ``10m``, ``1h30m``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match or not any(match.groups()):
        raise UsageError(f"{where}: cannot read {value!r} as a duration (e.g. 600, 90s, 10m, 1h30m)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_extra_overrides(args: list[str]) -> dict[str, str]:
    """``--section.key value`` or ``--section.key=value`` pairs left over by the CLI parser."""
    overrides: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise UsageError(f"unexpected argument {arg!r} (overrides look like --train.lr 0.001)")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise UsageError(f"option --{name} needs a value")
            value = args[i + 1]
            i += 1
        overrides[name.replace("-", "_")] = value
        i += 1
    return overrides
