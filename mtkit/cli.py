"""The ``mtkit`` command line: one short function per command, each calling the library.

Errors a user can fix print as one line (``mtkit: error: ...``) with exit status 2 for usage
errors and 1 otherwise; ``--debug`` (anywhere on the line, or MTKIT_DEBUG=1) shows tracebacks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from mtkit import __version__
from mtkit.config import SECTIONS, Recipe, load_recipe, parse_extra_overrides, recipe_keys, set_option
from mtkit.errors import Interrupted, MtkitError, UsageError

app = typer.Typer(
    name="mtkit",
    help="Neural machine translation with the recurrent models of Dive into Deep Learning. "
    "Add --debug anywhere to see the traceback of an error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
stdout = Console(soft_wrap=True, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)

RecipeOpt = Annotated[
    Optional[Path],
    typer.Option("--recipe", help="TOML recipe with \\[data], \\[model] and \\[train] settings; flags override it."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[str, typer.Option(help="auto (bf16 on GPUs with native bf16, else fp32), fp32, bf16 (autocast: up to twice as fast on CPUs with AVX-512 bf16, scores differ slightly) or fp16 (CUDA).")]
# Which command reads each recipe section.
SECTION_COMMANDS = {"data": "preprocess", "model": "train", "train": "train"}


def _setting(dotted: str, help: str, *flags: str, default: str | None = None) -> Any:
    """The option for a recipe setting; its help ends with mtkit's default (or ``default``)."""
    section, _, key = dotted.partition(".")
    if default is None:
        value = next(f.default for f in dataclasses.fields(SECTIONS[section]) if f.name == key)
        default = str(value).lower() if isinstance(value, bool) or value is None else str(value)
    return typer.Option(*flags, help=f"{help} \\[default: {default}]")


def _apply(recipe: Recipe, section: str, values: dict[str, Any]) -> Recipe:
    """Set every option given on the command line (None means: keep the recipe's value)."""
    for key, value in values.items():
        if value is not None:
            set_option(recipe, f"{section}.{key}", value)
    return recipe


def _apply_extra(recipe: Recipe, ctx: typer.Context, sections: tuple[str, ...]) -> Recipe:
    """Set ``--SECTION.KEY VALUE`` overrides, refusing sections this command does not read."""
    for dotted, value in parse_extra_overrides(ctx.args).items():
        section = dotted.partition(".")[0]
        if section in SECTION_COMMANDS and section not in sections:
            flag = "--" + dotted.replace("_", "-")
            raise UsageError(f"{flag} is a setting of `mtkit {SECTION_COMMANDS[section]}`, not of `mtkit {ctx.info_name}`")
        set_option(recipe, dotted, value)
    return recipe


def _print_version(value: bool) -> None:
    if value:
        stdout.print(f"mtkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def preprocess(
    ctx: typer.Context,
    source: Annotated[Optional[str], typer.Argument(help="A corpus: a .zip, a TSV of pairs or a prefix of two files (PREFIX.en, PREFIX.fr); plain, .gz, .xz or .bz2. Omitted (and no --train): download the book's fra-eng.zip.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Data directory to create.")] = ...,  # type: ignore[assignment]
    recipe: RecipeOpt = None,
    train: Annotated[Optional[list[str]], typer.Option(help="A training corpus (like SOURCE); repeat it to add several.")] = None,
    dev: Annotated[Optional[str], typer.Option(help="Ready-made dev pairs; without it dev and test are split off the corpora.")] = None,
    test: Annotated[Optional[str], typer.Option(help="Ready-made test pairs (with --dev).")] = None,
    src_lang: Annotated[Optional[str], _setting("data.src_lang", "Source language code.")] = None,
    tgt_lang: Annotated[Optional[str], _setting("data.tgt_lang", "Target language code.")] = None,
    reverse: Annotated[Optional[bool], _setting("data.reverse", "Swap the columns (French→English for fra-eng).", "--reverse/--no-reverse")] = None,
    normalize: Annotated[Optional[str], _setting("data.normalize", "clean (NFC, spaces), book (the chapter's: lowercase, space before , . ! ?) or book-cased.")] = None,
    tokenizer: Annotated[Optional[str], _setting("data.tokenizer", "word (the book's) or sentencepiece.")] = None,
    min_freq: Annotated[Optional[int], _setting("data.min_freq", "word: keep tokens seen this often.")] = None,
    vocab_size: Annotated[Optional[int], _setting("data.vocab_size", "sentencepiece: vocabulary size.")] = None,
    sp_model: Annotated[Optional[str], _setting("data.sp_model", "sentencepiece: unigram or bpe.")] = None,
    spm_sample: Annotated[Optional[int], _setting("data.spm_sample", "sentencepiece: train on a seeded sample of at most N sentences per side.")] = None,
    spm_sample_mb: Annotated[Optional[int], _setting("data.spm_sample_mb", "sentencepiece: and on at most N MB of text per side (its trainer needs about 21 bytes per character).")] = None,
    joint_vocab: Annotated[Optional[bool], _setting("data.joint_vocab", "One vocabulary for both languages.", "--joint-vocab/--separate-vocab")] = None,
    vocab_with_dev: Annotated[Optional[bool], _setting("data.vocab_with_dev", "Build the vocabularies on train + dev, as the book does.", "--vocab-with-dev/--vocab-train-only")] = None,
    max_examples: Annotated[Optional[int], _setting("data.max_examples", "Use only the first N pairs (the book's knob).", default="all")] = None,
    max_len: Annotated[Optional[int], _setting("data.max_len", "Drop training pairs with a side longer than N tokens.")] = None,
    split: Annotated[Optional[str], _setting("data.split", "grouped (by a seeded hash of the source; no source shared with train) or ordered (the book: file order).")] = None,
    dev_size: Annotated[Optional[int], _setting("data.dev_size", "Dev source sentences.")] = None,
    test_size: Annotated[Optional[int], _setting("data.test_size", "Test source sentences.")] = None,
    seed: Annotated[Optional[int], _setting("data.seed", "Seed of the split and of the SentencePiece sample.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Worker processes \\[default: one per core]; the output is the same for any number.")] = None,
    allow_skipped: Annotated[bool, typer.Option("--allow-skipped", help="Keep a source even when most of its lines are skipped (stop with an error otherwise).")] = False,
    max_expanded_size: Annotated[str, typer.Option(help="Refuse a compressed file or zip member that expands beyond this (e.g. 500M, 64G).")] = "64G",
    max_expand_ratio: Annotated[float, typer.Option(help="Refuse compressed data that expands more than this many times (a likely decompression bomb).")] = 200.0,
    tokenizers_from: Annotated[Optional[Path], typer.Option(help="Encode with the tokenisers and vocabularies of this trained run (or .mtkit file from `mtkit export`), to fine-tune it (`mtkit train --init`); settings that would change them are refused.")] = None,
    force: ForceOpt = False,
) -> None:
    """Turn raw parallel text into a data directory: split, normalise, tokenise, encode."""
    from mtkit.data.preprocess import RunOptions, preprocess as run_preprocess, print_report
    from mtkit.data.sources import ReadLimits, parse_size

    values = locals()
    config = load_recipe(recipe)
    _apply(config, "data", {k: values[k] for k in _DATA_FLAGS})
    _apply_extra(config, ctx, ("data",))
    corpora = ([source] if source is not None else []) + list(train or [])
    options = RunOptions(
        limits=ReadLimits(parse_size(max_expanded_size), max_expand_ratio),
        allow_skipped=allow_skipped, progress=stderr.is_terminal,
    )
    if workers is not None:
        options.workers = workers
    tokenizers = None
    if tokenizers_from is not None:
        from mtkit.finetune import inherited_tokenizers

        tokenizers = inherited_tokenizers(tokenizers_from, config.data, _given(values, _DATA_FLAGS, ctx, "data"))
    report = run_preprocess(config.data, out, corpora or [None], dev, test, force, options, tokenizers)
    print_report(report, stdout)
    if tokenizers is not None:
        stdout.print(f"tokenisers and vocabularies: those of {tokenizers_from}", markup=False)


def _given(values: dict[str, Any], flags: set[str], ctx: typer.Context, section: str) -> set[str]:
    """The ``section`` settings given by a flag, a --SECTION.KEY override or the recipe file."""
    overrides = {d.partition(".")[2] for d in parse_extra_overrides(ctx.args) if d.partition(".")[0] == section}
    return {k for k in flags if values[k] is not None} | overrides | recipe_keys(values["recipe"], section)


_DATA_FLAGS = {
    "src_lang", "tgt_lang", "reverse", "normalize", "tokenizer", "min_freq", "vocab_size",
    "sp_model", "spm_sample", "spm_sample_mb", "joint_vocab", "vocab_with_dev", "max_examples", "max_len", "split",
    "dev_size", "test_size", "seed",
}
_MODEL_FLAGS = {
    "cell", "impl", "embed", "hidden", "layers", "decoder_layers", "bidirectional", "bridge",
    "attention", "attention_score", "context_input", "dropout", "tie_embeddings", "source_steps",
    "decode_steps", "output_init",
}
_TRAIN_FLAGS = {
    "lr", "batch_size", "batch_tokens", "seed", "max_epochs", "max_steps", "max_time",
    "valid_every", "valid_beam", "precision", "device", "schedule", "warmup", "label_smoothing", "accumulate",
    "patience", "stop_on", "save_every", "clip_norm", "keep_checkpoints", "log_every", "truncate",
    "plateau_factor", "plateau_patience", "shuffled_batches",
}
_LIMIT_FLAGS = ("max_steps", "max_epochs", "max_time")
SEED_HELP = (
    "Random seed of the weights, dropout and batch order. A run limited by --max-steps or "
    "--max-epochs repeats bit for bit with the same seed, settings and machine (on a CPU, also "
    "with the same thread count), and resumes bit for bit after Ctrl-C. A --max-time run takes as "
    "many steps as the machine manages, and with --schedule linear its learning rate at each "
    "step follows the clock too; everything else is fixed by the seed."
)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Data directory from `mtkit preprocess`.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to create.")] = None,
    recipe: RecipeOpt = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue RUN_DIR from its last.pt with its saved config (raise limits with --max-*).")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Fine-tune: start from this run's (or .mtkit file's) weights and model settings, with a fresh optimiser and schedule (--data encoded with `mtkit preprocess --tokenizers-from`).")] = None,
    init_checkpoint: Annotated[Optional[str], typer.Option(help="With --init RUN_DIR: best (default), last, or a checkpoint file of that run.")] = None,
    tensorboard: Annotated[Optional[Path], typer.Option(help="Also log to TensorBoard in this directory: training loss, learning rate, tokens/s, dev scores, example translations (needs: pip install 'mtkit\\[tensorboard]').")] = None,
    cell: Annotated[Optional[str], _setting("model.cell", "gru or lstm.")] = None,
    impl: Annotated[Optional[str], _setting("model.impl", "fused (nn.GRU/nn.LSTM kernels) or scratch (the chapter's gate equations).")] = None,
    embed: Annotated[Optional[int], _setting("model.embed", "Embedding size.")] = None,
    hidden: Annotated[Optional[int], _setting("model.hidden", "RNN hidden size (per direction).")] = None,
    layers: Annotated[Optional[int], _setting("model.layers", "Encoder RNN layers (the decoder's too unless --decoder-layers).")] = None,
    decoder_layers: Annotated[Optional[int], _setting("model.decoder_layers", "Decoder RNN layers (needs --bridge linear/zero if different).", default="--layers")] = None,
    bidirectional: Annotated[Optional[bool], _setting("model.bidirectional", "Bidirectional encoder.", "--bidirectional/--unidirectional")] = None,
    bridge: Annotated[Optional[str], _setting("model.bridge", "Decoder initial state: last (the book's hand-off), linear or zero.")] = None,
    attention: Annotated[Optional[str], _setting("model.attention", "none (the book's fixed context), bahdanau or luong.")] = None,
    attention_score: Annotated[Optional[str], _setting("model.attention_score", "Luong score: general or dot.")] = None,
    context_input: Annotated[Optional[bool], _setting("model.context_input", "Luong: also feed the book's fixed context to every decoder input.", "--context-input/--no-context-input")] = None,
    dropout: Annotated[Optional[float], _setting("model.dropout", "Dropout between RNN layers.")] = None,
    tie_embeddings: Annotated[Optional[bool], _setting("model.tie_embeddings", "Share the target embeddings with the output layer (needs embed == hidden).", "--tie-embeddings/--no-tie-embeddings")] = None,
    source_steps: Annotated[Optional[int], _setting("model.source_steps", "The book's encoder: run over every source padded or cut to N tokens, <pad>s included (none: packed, padding unseen).")] = None,
    decode_steps: Annotated[Optional[int], _setting("model.decode_steps", "The book's prediction: at most N tokens (and <eos>) unless --max-len-a/-b say otherwise.")] = None,
    output_init: Annotated[Optional[str], _setting("model.output_init", "The output layer's initialisation: xavier, or pytorch (the book's, whose LazyLinear escapes Xavier).")] = None,
    lr: Annotated[Optional[float], _setting("train.lr", "Adam learning rate.")] = None,
    schedule: Annotated[Optional[str], _setting("train.schedule", "constant, linear (to zero at the first limit), inverse-sqrt or plateau.")] = None,
    warmup: Annotated[Optional[int], _setting("train.warmup", "Warm-up steps: the rate rises linearly to --lr over the first N steps, under every schedule.")] = None,
    plateau_factor: Annotated[Optional[float], _setting("train.plateau_factor", "plateau: multiply the rate by this after --plateau-patience validations without a better dev score.")] = None,
    plateau_patience: Annotated[Optional[int], _setting("train.plateau_patience", "plateau: validations without a better dev score before the rate drops.")] = None,
    batch_size: Annotated[Optional[int], _setting("train.batch_size", "Sentences per batch and process (instead of --batch-tokens).")] = None,
    batch_tokens: Annotated[Optional[int], _setting("train.batch_tokens", "Target tokens per length-bucketed batch, per process: an update takes processes × --accumulate batches.")] = None,
    accumulate: Annotated[Optional[int], _setting("train.accumulate", "Add up the gradients of N batches (per process) before each update: N times the batch in the same memory.")] = None,
    truncate: Annotated[Optional[int], _setting("train.truncate", "Cut every sentence to N tokens counting <eos> (the book's num_steps).")] = None,
    shuffled_batches: Annotated[Optional[bool], _setting("train.shuffled_batches", "The book's batches: --batch-size sentences in a new random order each epoch, instead of length buckets.", "--shuffled-batches/--bucketed-batches")] = None,
    clip_norm: Annotated[Optional[float], _setting("train.clip_norm", "Global gradient-norm clipping.")] = None,
    label_smoothing: Annotated[Optional[float], _setting("train.label_smoothing", "Label smoothing of the loss.")] = None,
    seed: Annotated[Optional[int], _setting("train.seed", SEED_HELP)] = None,
    max_epochs: Annotated[Optional[int], _setting("train.max_epochs", "Stop after N epochs.", default="10 when no limit is given")] = None,
    max_steps: Annotated[Optional[int], _setting("train.max_steps", "Stop after N updates.")] = None,
    max_time: Annotated[Optional[str], _setting("train.max_time", "Stop after this long, e.g. 600, 90s, 10m, 1h30m.")] = None,
    valid_every: Annotated[Optional[int], _setting("train.valid_every", "Validate every N steps.", default="every epoch")] = None,
    valid_beam: Annotated[Optional[int], _setting("train.valid_beam", "Beam size for dev BLEU (1 = greedy, fastest).")] = None,
    stop_on: Annotated[Optional[str], _setting("train.stop_on", "Metric for best.pt and early stopping: bleu, chrf or loss.")] = None,
    patience: Annotated[Optional[int], _setting("train.patience", "Stop after N validations without improvement.")] = None,
    save_every: Annotated[Optional[int], _setting("train.save_every", "Also checkpoint every N steps between validations.")] = None,
    keep_checkpoints: Annotated[Optional[int], _setting("train.keep_checkpoints", "Numbered checkpoints (step-N.pt) kept for `mtkit average`; 0 keeps none.")] = None,
    log_every: Annotated[Optional[int], _setting("train.log_every", "Log a progress line every N steps.")] = None,
    device: Annotated[Optional[str], _setting("train.device", "auto (CUDA when present), cpu, cuda or cuda:N.")] = None,
    precision: Annotated[Optional[str], _setting("train.precision", "auto (bf16 on GPUs with native bf16, else fp32), fp32, bf16 or fp16 (CUDA).")] = None,
    nproc: Annotated[Optional[int], typer.Option(min=1, help="Train in N processes on this machine, one per GPU (DistributedDataParallel via torchrun).")] = None,
    nnodes: Annotated[Optional[int], typer.Option(min=1, help="Train on M machines, each running this command with its --node-rank (and --nproc).")] = None,
    node_rank: Annotated[Optional[int], typer.Option(min=0, help="With --nnodes: this machine's number, 0 to M-1; machine 0 writes the run directory.")] = None,
    master_addr: Annotated[Optional[str], typer.Option(help="With --nnodes: the address of machine 0, which the others reach.")] = None,
    master_port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="With --nnodes: a free TCP port on machine 0 \\[default: 29500].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing run directory when the new run ends; until then it trains in RUN_DIR.new.")] = False,
) -> None:
    """Train a model; the first limit reached (--max-epochs/--max-steps/--max-time) ends it.

    Any recipe value can also be set as --SECTION.KEY VALUE, e.g. --train.clip-norm 5.
    Ctrl-C saves the state; continue with --resume RUN_DIR.
    """
    from mtkit.training.loop import resume as resume_training, train as run_training

    values = locals()
    if _launched(values):
        return
    if resume is not None:
        resume_training(resume, _resume_limits(values, ctx), stderr, tensorboard)
    else:
        config, data_keys = _train_recipe(values, ctx)
        parent = _parent(values, ctx, config)
        if parent is None:
            run_training(config, data, out, force, stderr, data_keys, tensorboard=tensorboard)
        else:
            from mtkit.finetune import fine_tune

            fine_tune(parent, config, data, out, force, stderr, data_keys, tensorboard)


def _parent(values: dict[str, Any], ctx: typer.Context, config: Recipe):
    """With --init: the run to fine-tune, whose model settings ``config`` takes."""
    if values["init"] is None:
        if values["init_checkpoint"] is not None:
            raise UsageError("--init-checkpoint needs --init RUN_DIR")
        return None
    from mtkit.finetune import Parent

    parent = Parent(values["init"], values["init_checkpoint"])
    parent.keep_model(config, _given(values, _MODEL_FLAGS, ctx, "model"))
    return parent


_LAUNCH_FLAGS = ("--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port")


def _launched(values: dict[str, Any]) -> bool:
    """With several processes (--nproc, --nnodes): run this very command line, without the
    launch options, in ``--nproc`` processes through torchrun, and say so."""
    from mtkit.rundir import RunDir
    from mtkit.training.distributed import Launch, launch

    machine = (values[key] for key in ("node_rank", "master_addr", "master_port"))
    processes = Launch(values["nproc"] or 1, values["nnodes"] or 1, *machine)
    processes.check()
    if processes.world == 1:
        return False
    if "LOCAL_RANK" in os.environ:
        raise UsageError("already started by torchrun: drop --nproc/--nnodes (torchrun sets the processes)")
    if values["resume"] is not None:
        RunDir(values["resume"]).check_processes(processes.world)
    argv, args = [], iter(a for a in sys.argv[1:] if a != "--debug")
    for arg in args:
        if arg in _LAUNCH_FLAGS:
            next(args, None)  # and its value
        elif not arg.startswith(tuple(f"{flag}=" for flag in _LAUNCH_FLAGS)):
            argv.append(arg)
    code = launch(processes, argv)
    if code:
        raise typer.Exit(code)
    return True


def _resume_limits(values: dict[str, Any], ctx: typer.Context) -> dict[str, Any]:
    """The limits given with --resume; anything else would no longer be the same run."""
    others = [k for k in ("data", "out", "recipe", "init", "init_checkpoint", *_MODEL_FLAGS, *_TRAIN_FLAGS - set(_LIMIT_FLAGS)) if values[k] is not None]
    if others or ctx.args:
        raise UsageError("--resume continues RUN_DIR with its saved config: give only limits (--max-steps/--max-epochs/--max-time) and --tensorboard")
    return {k: values[k] for k in _LIMIT_FLAGS}


def _train_recipe(values: dict[str, Any], ctx: typer.Context) -> tuple[Recipe, set[str]]:
    """The recipe with the command line's settings, and the data settings the recipe file gives."""
    if values["data"] is None or values["out"] is None:
        raise UsageError("give --data DATA_DIR and --out RUN_DIR (or --resume RUN_DIR)")
    if values["batch_size"] is not None and values["batch_tokens"] is not None:
        raise UsageError("give --batch-size or --batch-tokens, not both")
    config = load_recipe(values["recipe"])
    _apply(config, "model", {k: values[k] for k in _MODEL_FLAGS})
    _apply(config, "train", {k: values[k] for k in _TRAIN_FLAGS})
    _apply_extra(config, ctx, ("model", "train"))
    return config, recipe_keys(values["recipe"], "data")


@app.command()
def translate(
    model: Annotated[list[Path], typer.Option("--model", "-m", help="Run directory from `mtkit train`, or a model file from `mtkit export`; repeat for an ensemble (one target vocabulary; the first model's length limit).")] = ...,  # type: ignore[assignment]
    input: Annotated[str, typer.Argument(help="Text file, one sentence per line; - or omitted: stdin (a prompt on a terminal).")] = "-",
    output: Annotated[str, typer.Option("--output", "-o", help="Output file; - for stdout.")] = "-",
    checkpoint: Annotated[Optional[str], typer.Option(help="best (default), last, or a checkpoint file.")] = None,
    beam: Annotated[int, typer.Option(help="Beam size; 1 is greedy search.")] = 1,
    alpha: Annotated[float, typer.Option(help="Length normalisation: rank by log P / lp(L).")] = 0.75,
    length_penalty: Annotated[str, typer.Option(help="book: lp = L^alpha; gnmt: lp = ((5+L)/6)^alpha.")] = "book",
    nbest: Annotated[int, typer.Option(help="Print the N best (N <= beam) as `index ||| hypothesis ||| score`.")] = 1,
    output_format: Annotated[str, typer.Option("--format", help="text, or jsonl (one JSON object per input with its n-best list).")] = "text",
    search: Annotated[str, typer.Option(help="beam, or exhaustive (tiny vocabularies only: teaching and testing).")] = "beam",
    batch_size: Annotated[Optional[int], typer.Option(help="Sentences decoded together \\[default: 512/beam]; results never depend on it.")] = None,
    buffer: Annotated[int, typer.Option(help="Lines read and written per chunk (bounds memory).")] = 10_000,
    max_len_a: Annotated[Optional[float], typer.Option(help="Output length limit: a·(source length) + b tokens, <eos> included \\[default: 2·|x| + 10; for a model with decode_steps N, N + 1].")] = None,
    max_len_b: Annotated[Optional[int], typer.Option(help="See --max-len-a.")] = None,
    no_unk: Annotated[bool, typer.Option("--no-unk", help="Never output <unk>.")] = False,
    tokenized: Annotated[bool, typer.Option("--tokenized", help="Print tokens/pieces instead of detokenised text.")] = False,
    show_attention: Annotated[bool, typer.Option("--show-attention", help="Print each sentence's attention as a heatmap on stderr.")] = False,
    attention_png: Annotated[Optional[Path], typer.Option(help="Save each sentence's attention heatmap as PREFIX-N.png (needs matplotlib).")] = None,
    encoding_errors: Annotated[str, typer.Option(help="Invalid UTF-8 in the input: replace (and count) or strict (stop).")] = "replace",
    max_input_len: Annotated[int, typer.Option(help="Longer inputs are cut to this many tokens (and counted).")] = 250,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    quantize: Annotated[str, typer.Option(help="none, or int8: the decoder's matrix products in 8-bit integers (CPU; faster, scores differ slightly).")] = "none",
    shortlist: Annotated[int, typer.Option(help="Score only the K most frequent target tokens and each source token's K most associated ones (learnt from the training data); 0: the whole vocabulary.")] = 0,
    shortlist_data: Annotated[Optional[Path], typer.Option(help="Data directory to learn --shortlist from (default: the one the model was trained on).")] = None,
    sample: Annotated[Optional[str], typer.Option(help="Draw each output instead of searching for the best: full (the whole distribution), topk:K (the K most probable tokens) or nucleus:P (the most probable tokens holding P of the probability). Scores are the model's log-probabilities.")] = None,
    temperature: Annotated[float, typer.Option(help="With --sample: divide the log-probabilities by T (above 1 flatter, below 1 sharper).")] = 1.0,
    seed: Annotated[int, typer.Option(help="With --sample: the random seed. A line's sample depends only on the seed, the line and its number, never on the batch.")] = 1,
    prefix: Annotated[Optional[Path], typer.Option(help="Target text, one line per input line: each output starts with its line (an empty line: no prefix), the rest searched as usual.")] = None,
) -> None:
    """Translate raw text; exactly one output line per input line, in input order."""
    from mtkit.decoding import SearchOptions
    from mtkit.fileio import ReadStats, read_lines
    from mtkit.translate import Translator, interactive

    _check_translate_options(output_format, encoding_errors, batch_size, buffer, max_input_len)
    if len(model) > 1 and (show_attention or attention_png):
        raise UsageError("--show-attention and --attention-png draw one model's attention: give one --model")
    options = SearchOptions(search, beam, alpha, length_penalty, nbest, no_unk=no_unk, sample=sample, temperature=temperature, seed=seed)
    translator = Translator(model, checkpoint, device, max_input_len, precision, quantize, shortlist, shortlist_data)
    options.max_len_a, options.max_len_b = translator.run.recipe.model.length_limit(max_len_a, max_len_b)
    if input == "-" and output == "-" and output_format == "text" and prefix is None and sys.stdin.isatty():
        interactive(translator, options, stderr, tokenized)
        return
    read = ReadStats()
    lines = read_lines(input, encoding_errors, read)
    prefixes = read_lines(prefix, encoding_errors, read) if prefix is not None else None
    if show_attention or attention_png:
        outputs = _with_attention(
            translator, lines, options, batch_size, buffer, tokenized, output_format, show_attention, attention_png, prefixes
        )
    else:
        outputs = translator.stream(lines, options, batch_size, buffer, tokenized, output_format, prefixes)
    _write_lines(outputs, output)
    _warn_repairs(read, translator.stats, max_input_len)


def _check_translate_options(
    output_format: str, encoding_errors: str, batch_size: Optional[int], buffer: int, max_input_len: int
) -> None:
    if output_format not in ("text", "jsonl"):
        raise UsageError("--format must be text or jsonl")
    if encoding_errors not in ("replace", "strict"):
        raise UsageError("--encoding-errors must be replace or strict")
    if (batch_size is not None and batch_size < 1) or buffer < 1 or max_input_len < 1:
        raise UsageError("--batch-size, --buffer and --max-input-len must be at least 1")


def _warn_repairs(read, done, max_input_len: int) -> None:
    """One warning line counting the input lines that were repaired, cut or left untranslated."""
    notes = [
        f"{count:,} {what}" for count, what in (
            (read.replaced, "with invalid UTF-8 replaced"),
            (done.truncated, f"cut to {max_input_len} tokens"),
            (done.failed, "that could not be translated (left empty)"),
        ) if count
    ]
    if notes:
        stderr.print(f"mtkit: warning: of {done.lines:,} lines, " + "; ".join(notes), highlight=False, markup=False)


def _with_attention(
    translator, lines, options, batch_size: Optional[int], buffer: int, tokenized: bool, output_format: str,
    show: bool, png_prefix: Optional[Path], prefixes=None,
):
    """Translate ``lines`` (output lines as ``Translator.stream``), showing or saving the attention
    behind each best translation."""
    from mtkit.plotting import render_attention, save_attention_png
    from mtkit.translate import format_hypotheses

    translations = translator.translations(lines, options, batch_size, buffer, tokenized, prefixes)
    for number, (line, hyps) in enumerate(translations, start=1):
        yield from format_hypotheses(number - 1, line, hyps, options.nbest, output_format)
        if not hyps:
            continue
        src_tokens, tgt_tokens, weights = translator.attention(line, hyps[0][1].tokens)
        if show:
            stderr.print(f"{number}: {hyps[0][0]}", markup=False)
            render_attention(stderr, src_tokens, tgt_tokens, weights)
        if png_prefix:
            save_attention_png(Path(f"{png_prefix}-{number}.png"), src_tokens, tgt_tokens, weights)


def _write_lines(lines, output: str) -> None:
    """Write to stdout as lines are produced, or to a file atomically once all are done."""
    from mtkit.fileio import write_lines

    if output == "-":
        for line in lines:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        return
    write_lines(output, lines)


@app.command()
def evaluate(
    hyp: Annotated[Optional[Path], typer.Option(help="Detokenised hypotheses, one per line.")] = None,
    ref: Annotated[Optional[list[Path]], typer.Option(help="Reference file; repeat for more references (empty lines in the 2nd and later files mean: no reference), or a .jsonl file of reference lists.")] = None,
    model: Annotated[Optional[list[Path]], typer.Option("--model", "-m", help="Run directory or model file: translate --split of --data, then score; repeat for an ensemble.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Data directory for --model.")] = None,
    split: Annotated[str, typer.Option(help="dev or test (with --model).")] = "test",
    checkpoint: Annotated[Optional[str], typer.Option(help="With --model: best (default), last or a file.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="With --model: also save the translations here.")] = None,
    beam: Annotated[int, typer.Option(help="With --model: beam size (1 = greedy).")] = 1,
    alpha: Annotated[float, typer.Option(help="With --model: length normalisation exponent.")] = 0.75,
    length_penalty: Annotated[str, typer.Option(help="With --model: book or gnmt.")] = "book",
    batch_size: Annotated[Optional[int], typer.Option(help="With --model: sentences decoded together \\[default: 512/beam].")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    quantize: Annotated[str, typer.Option(help="With --model: none, or int8 (see translate --help).")] = "none",
    shortlist: Annotated[int, typer.Option(help="With --model: a vocabulary shortlist of K, learnt from --data's training split (see translate --help).")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object (bleu, chrf, ter, signatures).")] = False,
    lowercase: Annotated[bool, typer.Option("--lowercase", "-lc", help="Case-insensitive BLEU, as sacrebleu -lc (chrF stays cased; TER is case-insensitive).")] = False,
    book_bleu: Annotated[bool, typer.Option("--book-bleu", help="Also print the book's BLEU for every sentence.")] = False,
    book_bleu_k: Annotated[int, typer.Option(help="Longest n-gram of the book's BLEU.")] = 2,
    src: Annotated[Optional[Path], typer.Option(help="Source sentences, shown beside --book-bleu scores.")] = None,
) -> None:
    """Score translations with sacreBLEU (BLEU, chrF, TER), optionally the book's BLEU."""
    from mtkit.evaluation import book_bleu as book_score, corpus_scores, read_lines, read_references
    from mtkit.translate import translate_split

    if model:
        if hyp is not None or ref:
            raise UsageError("give either --model with --data, or --hyp with --ref")
        if data is None:
            raise UsageError("--model needs --data (the data directory holding the split)")
        hypotheses, references = translate_split(
            model, data, split, checkpoint, beam, alpha, length_penalty, batch_size, precision, device, quantize, shortlist
        )
        if output is not None:
            from mtkit.fileio import write_lines

            write_lines(output, hypotheses)
    else:
        if hyp is None or not ref:
            raise UsageError("give --hyp and at least one --ref (or --model and --data)")
        hypotheses = read_lines(hyp)
        references = read_references(ref, len(hypotheses))
    scores = corpus_scores(hypotheses, references, lowercase)
    if json_output:
        stdout.print_json(json.dumps(scores.as_dict()))
    else:
        for line in scores.lines:
            stdout.print(line)
    if book_bleu:
        sources = read_lines(src) if src is not None else [None] * len(hypotheses)
        for source, hypothesis, refs in zip(sources, hypotheses, references):
            score = max(book_score(hypothesis, r, book_bleu_k) for r in refs)
            shown = f"{source} => " if source is not None else ""
            stdout.print(f"{shown}{hypothesis}, bleu,{score:.3f}")


@app.command()
def serve(
    model: Annotated[list[str], typer.Option("--model", "-m", help="Run directory or model file (`mtkit export`) to serve, as PATH or NAME=PATH; repeat for more models (the first is the default).")],
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port, named when ready).")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(envvar="MTKIT_API_KEY", show_envvar=True, help="Required on every request but /health (Authorization: Bearer KEY or X-API-Key: KEY).")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(help="Let pages from this origin call the API (repeatable); none: no CORS.")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="best (default), last, or a checkpoint name, for every model.")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (as in translate).")] = "fp32",
    max_input_len: Annotated[int, typer.Option(help="Longer inputs are cut to this many tokens (as in translate).")] = 250,
    quantize: Annotated[str, typer.Option(help="none, or int8 (CPU; as in translate).")] = "none",
    threads: Annotated[Optional[int], typer.Option(help="Cores for decoding, one search thread each (default: PyTorch's thread count, as translate); like the batch size, it can change scores in their last digits.")] = None,
    max_batch: Annotated[int, typer.Option(help="Sentences decoded together across requests (1: no batching).")] = 64,
    max_wait_ms: Annotated[float, typer.Option(help="How long a decode may wait for more requests to join it.")] = 5.0,
    max_queue: Annotated[int, typer.Option(help="Sentences waiting at most; past it requests get 503 + Retry-After.")] = 1024,
    max_lines: Annotated[int, typer.Option(help="Sentences per request at most.")] = 64,
    max_chars: Annotated[int, typer.Option(help="Characters per sentence at most.")] = 1000,
    max_beam: Annotated[int, typer.Option(help="Largest beam a request may ask for.")] = 16,
    timeout: Annotated[float, typer.Option(help="Seconds a request may wait for its answer (then 504).")] = 30.0,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request on stderr.")] = False,
) -> None:
    """Serve models over HTTP: a JSON API (POST /translate, GET /models, GET /health, /docs) and a
    page at / to try them on. Needs the serve extra: pip install 'mtkit[serve]'."""
    from mtkit.serve.models import LoadOptions
    from mtkit.serve.server import serve as run_server
    from mtkit.serve.settings import ServeSettings

    if (threads is not None and threads < 1) or max_input_len < 1:
        raise UsageError("--threads and --max-input-len must be at least 1")
    settings = ServeSettings(
        host, port, api_key, cors_origin or [], max_batch, max_wait_ms, max_queue, max_lines, max_chars, max_beam, timeout
    )
    load = LoadOptions(checkpoint, device, precision, max_input_len, quantize)
    run_server(model, settings, load, threads, access_log, log=lambda line: stderr.print(line, markup=False))


@app.command()
def average(
    run_dir: Annotated[Path, typer.Argument(help="Run directory with numbered checkpoints (step-N.pt).")],
    last: Annotated[int, typer.Option(help="Average the N most recent numbered checkpoints.")] = 5,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write \\[default: RUN_DIR/averaged.pt].")] = None,
) -> None:
    """Average the parameters of a run's last N checkpoints into a new model.

    Translate with it: mtkit translate --model RUN_DIR --checkpoint averaged
    """
    from mtkit.rundir import RunDir
    from mtkit.checkpoint import average_checkpoints, last_checkpoints, save_checkpoint

    run = RunDir(run_dir)
    chosen = last_checkpoints(run.path, last, "--last")
    target = output or run.path / "averaged.pt"
    save_checkpoint(target, {"model": average_checkpoints(chosen), "meta": {"mtkit_version": __version__, "averaged": [p.name for p in chosen]}})
    run.load_model(str(target))  # proves the result loads into the run's model
    stdout.print(f"averaged {', '.join(p.name for p in chosen)} → {target}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory from `mtkit train`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write, e.g. model.mtkit.")] = ...,  # type: ignore[assignment]
    checkpoint: Annotated[Optional[str], typer.Option(help="best (default), last, a checkpoint name (averaged, step-N) or a file.")] = None,
    average: Annotated[int, typer.Option(help="Export the average of the last N numbered checkpoints instead (as `mtkit average`).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a trained model into one file: configuration, tokenisers, weights and the training
    run's summary. Use it wherever a run directory goes: mtkit translate --model model.mtkit"""
    from mtkit.export import export_run

    exported = export_run(run_dir, output, checkpoint, average, force)
    weights = exported.summary()["weights"]
    chosen = f"the average of {', '.join(weights['averaged'])}" if "averaged" in weights else weights["checkpoint"]
    stdout.print(f"exported {run_dir} ({chosen}) → {output} ({output.stat().st_size / 1e6:.1f} MB)")


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="Run directory or model file.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """What a model is: languages, architecture, parameters, training data, best dev scores,
    precision and mtkit version."""
    from mtkit.export import describe, render

    described = describe(model)
    if json_output:
        stdout.print_json(json.dumps(described))
        return
    rows = render(described)
    width = max(len(label) for label, _ in rows)
    for label, text in rows:
        stdout.print(f"{label:<{width}}  {text}", markup=False)


@app.command()
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run directories, overlaid.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = Path("training.png"),
) -> None:
    """Plot training loss, dev loss and dev BLEU against steps and time (needs matplotlib)."""
    from mtkit.plotting import plot_runs

    plot_runs(run_dirs, output)
    stdout.print(f"wrote {output}")


# -- entry point and the single error path ---------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("MTKIT_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    try:
        result = app(args=args, prog_name="mtkit", standalone_mode=False)
    except Interrupted as exc:
        sys.stderr.write(f"mtkit: {exc}\n")
        sys.exit(exc.exit_code)
    except MtkitError as exc:
        if debug:
            raise
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`): not an error
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001
        if debug:
            raise
        _handle_unexpected(exc)
    sys.exit(result if isinstance(result, int) else 0)


def _handle_unexpected(exc: Exception) -> None:
    # Typer's parser errors (vendored click in new releases, click in old ones) carry
    # format_message() and exit_code; its Exit and Abort signals carry only a code.
    name = type(exc).__name__
    if name == "Exit":
        sys.exit(getattr(exc, "exit_code", 0))
    if name == "Abort":
        _fail("aborted", 1)
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        message = " ".join(exc.format_message().split())
        if not message:  # `mtkit` alone: the help was printed
            sys.exit(exc.exit_code)
        command = getattr(getattr(exc, "ctx", None), "command_path", "mtkit")
        _fail(f"{message} (see `{command} --help`)", 2)
    log = Path(tempfile.gettempdir()) / f"mtkit-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    log.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    _fail(f"unexpected {name}: {exc} (traceback in {log}; rerun with --debug)", 1)


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"mtkit: error: {message}\n")
    sys.exit(code)
