"""Translating text with a trained run directory: files or stdin, streamed in input order.

Input is read in chunks of ``buffer`` lines, so memory stays bounded for any file length; each
chunk is normalised, tokenised, decoded in length-sorted batches and written back in input
order before the next is read. Every input line gives exactly one output line.
"""

from __future__ import annotations

import json

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch

from mtkit.data.dataset import DataDir
from mtkit.decoding import SearchOptions, decode
from mtkit.decoding.ensemble import Ensemble
from mtkit.decoding.hypothesis import Hypothesis
from mtkit.device import autocast, keep_freed_memory, resolve_device, resolve_precision
from mtkit.errors import UsageError
from mtkit.models.quantize import QUANTIZATIONS, quantize_int8
from mtkit.models.seq2seq import Seq2Seq
from mtkit.models.shortlist import Shortlist
from mtkit.modelfile import SavedModel
from mtkit.rundir import open_model


@dataclass
class TranslateStats:
    """What translating a stream met on the way (reported on stderr)."""

    lines: int = 0
    truncated: int = 0  # longer than max_input_len tokens: cut before translating
    failed: int = 0  # could not be translated: an empty output line and a warning


class Translator:
    """Loaded models with their tokenisers, ready to translate raw sentences: one model, or
    an ensemble of several (``--model A --model B``) with one target vocabulary."""

    def __init__(
        self, models: str | Path | Sequence[str | Path], checkpoint: str | None = None, device: str = "auto",
        max_input_len: int = 250, precision: str = "auto", quantize: str = "none", shortlist: int = 0,
        shortlist_data: str | Path | None = None,
    ) -> None:
        keep_freed_memory()
        paths = [models] if isinstance(models, (str, Path)) else list(models)
        if not paths:
            raise UsageError("give at least one --model")
        self.runs = [open_model(path) for path in paths]
        self.run = self.runs[0]  # the languages, target tokeniser and length limit are its
        check_one_target_vocabulary(self.runs)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = self._load(checkpoint, quantize)
        self.shortlisted = bool(shortlist)
        if shortlist:
            if isinstance(self.model, Ensemble):
                raise UsageError("--shortlist is for one model: an ensemble scores the whole vocabulary")
            self.model.shortlist = learn_shortlist(self.run, shortlist, shortlist_data)
        self.sources = [run.processor("src") for run in self.runs]  # each model tokenises its own way
        self.src, self.tgt = self.sources[0], self.run.processor("tgt")
        self.max_input_len = max_input_len
        self.stats = TranslateStats()
        # On a CPU, one search thread per core (see ``decode``); a GPU takes the batches in turn.
        self.workers = torch.get_num_threads() if self.device.type == "cpu" else 1

    def _load(self, checkpoint: str | None, quantize: str) -> Seq2Seq | Ensemble:
        """Each model with its weights (the decoder's products in int8 with ``quantize``); an
        ensemble of them when there are several."""
        if quantize not in QUANTIZATIONS:
            raise UsageError(f"unknown quantization {quantize!r}; use {' or '.join(QUANTIZATIONS)}")
        if quantize == "int8" and self.device.type != "cpu":
            raise UsageError("--quantize int8 is for CPUs; on a GPU use --precision bf16 or fp16")
        models = [run.load_model(checkpoint, self.device)[0] for run in self.runs]
        if quantize == "int8":
            models = [quantize_int8(model) for model in models]
        return models[0] if len(models) == 1 else Ensemble(models)

    def nbest(
        self, sentences: list[str], options: SearchOptions, batch_size: int | None = None, tokenized: bool = False,
        prefixes: list[str] | None = None, first: int = 0,
    ) -> list[list[tuple[str, Hypothesis]]]:
        """The n-best (text, hypothesis) list of each raw sentence; an empty line gets []. Each
        output starts with its sentence's prefix (target text) where ``prefixes`` are given;
        ``first`` is the number of the first sentence (sampling seeds each by its number)."""
        if self.shortlisted and prefixes is not None:
            raise UsageError("--prefix forces tokens that a shortlist may not hold: use one or the other")
        if self.shortlisted and options.sampling is not None:
            raise UsageError("--sample draws from the whole vocabulary: it takes no --shortlist")
        encoded = [self._encode(sentence) for sentence in sentences]
        self.stats.lines += len(sentences)
        wanted = [i for i, ids in enumerate(encoded) if (any(map(len, ids)) if isinstance(ids, tuple) else ids)]
        forced = [self.tgt.encode(prefixes[i]) for i in wanted] if prefixes is not None else None
        found = self._decode([encoded[i] for i in wanted], options, batch_size, [first + i for i in wanted], forced)
        render = self.tgt.tokens if tokenized else self.tgt.decode
        results: list[list[tuple[str, Hypothesis]]] = [[] for _ in sentences]
        for i, hyps in zip(wanted, found):
            results[i] = [(one_line(render(h.tokens)), h) for h in hyps]
        return results

    def _encode(self, sentence: str) -> list[int] | tuple[list[int], ...]:
        """The sentence's ids (cut to ``max_input_len``, counted once); for an ensemble, a
        tuple of its ids under each model's tokeniser."""
        encoded = [src.encode(sentence) for src in self.sources]
        if any(len(ids) > self.max_input_len for ids in encoded):
            encoded = [ids[: self.max_input_len] for ids in encoded]
            self.stats.truncated += 1
        return encoded[0] if len(encoded) == 1 else tuple(encoded)

    def _decode(
        self, sources: list, options: SearchOptions, batch_size: int | None, sentences: list[int],
        prefixes: list[list[int]] | None,
    ) -> list[list[Hypothesis]]:
        """Decode in batches; should a batch run out of memory, retry its sentences one by one
        and give those that still fail no translation, so no line is ever lost or shifted."""
        try:
            with autocast(self.device, self.precision):
                return decode(self.model, sources, options, batch_size, self.device, self.workers, sentences, prefixes)
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
        # Retried outside the except block, so the failed batch's tensors are freed first.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(sources) == 1:
            self.stats.failed += 1
            return [[]]
        return [
            self._decode([source], options, 1, [sentence], None if prefixes is None else [prefixes[i]])[0]
            for i, (source, sentence) in enumerate(zip(sources, sentences))
        ]

    def translate(
        self, sentences: list[str], options: SearchOptions, batch_size: int | None = None, tokenized: bool = False
    ) -> list[str]:
        """The best translation of each raw sentence; an empty line gives an empty line."""
        return [hyps[0][0] if hyps else "" for hyps in self.nbest(sentences, options, batch_size, tokenized)]

    def stream(
        self, lines: Iterable[str], options: SearchOptions, batch_size: int | None = None,
        buffer: int = 10_000, tokenized: bool = False, output_format: str = "text",
        prefixes: Iterable[str] | None = None,
    ) -> Iterator[str]:
        """Translate lines chunk by chunk, yielding output lines in input order: one per input
        (``text``, ``jsonl``), or ``nbest`` lines ``index ||| hypothesis ||| score`` per input."""
        translations = self.translations(lines, options, batch_size, buffer, tokenized, prefixes)
        for index, (source, hyps) in enumerate(translations):
            yield from format_hypotheses(index, source, hyps, options.nbest, output_format)

    def translations(
        self, lines: Iterable[str], options: SearchOptions, batch_size: int | None = None,
        buffer: int = 10_000, tokenized: bool = False, prefixes: Iterable[str] | None = None,
    ) -> Iterator[tuple[str, list[tuple[str, Hypothesis]]]]:
        """(line, n-best list) for each line, translated ``buffer`` lines at a time, in input
        order; ``prefixes``, one line per input line, start the outputs."""
        iterator = iter(lines)
        forced = iter(prefixes) if prefixes is not None else None
        first = 0
        while chunk := list(islice(iterator, buffer)):
            chunk_prefixes = None
            if forced is not None:
                chunk_prefixes = list(islice(forced, len(chunk)))
                if len(chunk_prefixes) < len(chunk):
                    raise UsageError(f"--prefix has {first + len(chunk_prefixes):,} lines, fewer than the input")
            yield from zip(chunk, self.nbest(chunk, options, batch_size, tokenized, chunk_prefixes, first))
            first += len(chunk)
        if forced is not None and next(forced, None) is not None:
            raise UsageError(f"--prefix has more lines than the input ({first:,})")

    def attention(self, line: str, tgt_ids: list[int]) -> tuple[list[str], list[str], torch.Tensor]:
        """The attention behind translating ``line`` as ``tgt_ids``: the source and output pieces
        (each ending in ``<eos>``) and a (outputs, sources) matrix of weights."""
        from mtkit.plotting import attention_weights

        src_ids = self.src.encode(line)[: self.max_input_len]
        weights = attention_weights(self.model, src_ids, tgt_ids)
        return self.src.tokenizer.pieces(src_ids) + ["<eos>"], self.tgt.tokenizer.pieces(tgt_ids) + ["<eos>"], weights


def check_one_target_vocabulary(models: Sequence[SavedModel]) -> None:
    """An ensemble's models must share the target vocabulary; name the first two that do not."""
    first = models[0].tokenizer("tgt").vocab.tokens
    for other in models[1:]:
        tokens = other.tokenizer("tgt").vocab.tokens
        if tokens == first:
            continue
        if len(tokens) != len(first):
            difference = f"{len(first):,} and {len(tokens):,} tokens"
        else:
            i = next(i for i, (a, b) in enumerate(zip(first, tokens)) if a != b)
            difference = f"token {i} is {first[i]!r} in one, {tokens[i]!r} in the other"
        raise UsageError(
            f"an ensemble needs one target vocabulary, but {models[0].path} and {other.path} differ ({difference})"
        )


def format_hypotheses(
    index: int, source: str, hyps: list[tuple[str, Hypothesis]], nbest: int, output_format: str
) -> Iterator[str]:
    if output_format == "jsonl":
        yield json.dumps(
            {
                "index": index,
                "source": source,
                "hypotheses": [
                    {"text": text, "score": h.score, "log_prob": h.log_prob} for text, h in hyps
                ],
            },
            ensure_ascii=False,
        )
    elif nbest == 1:
        yield hyps[0][0] if hyps else ""
    else:
        for text, h in hyps or [("", Hypothesis([], 0.0, 0.0))]:
            yield f"{index} ||| {text} ||| {h.score:.4f}"


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError that says so."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "allocate memory" in str(exc)


def one_line(text: str) -> str:
    """Keep an output on one line whatever the model produced (byte pieces can decode to \\n)."""
    return " ".join(text.split()) if any(c in text for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029") else text


def learn_shortlist(run: SavedModel, k: int, data_dir: str | Path | None = None) -> Shortlist:
    """A vocabulary shortlist of ``k`` tokens per source token (and the ``k`` most frequent),
    learnt from the training split of ``data_dir``, by default the run's own data directory."""
    if k < 1:
        raise UsageError("--shortlist must be at least 1 (or 0 for none)")
    if data_dir is None and not run.raw.get("data_dir"):
        raise UsageError(f"--shortlist is learnt from the training data: give --shortlist-data DATA_DIR for {run.path}")
    path = Path(data_dir or run.raw["data_dir"])
    if not (path / "manifest.json").is_file():
        raise UsageError(
            f"--shortlist is learnt from the training data; {path} is not a data "
            "directory: give the one the model was trained on"
        )
    data = DataDir(path)
    sizes = [len(data.processor(side).tokenizer.vocab) for side in ("src", "tgt")]
    model_sizes = [len(run.processor(side).tokenizer.vocab) for side in ("src", "tgt")]
    if sizes != model_sizes:
        raise UsageError(f"{path}: vocabularies {sizes[0]}/{sizes[1]}, but the model's are {model_sizes[0]}/{model_sizes[1]}")
    return Shortlist.learn(data.encoded("train"), *sizes, k)


def translate_split(
    models: str | Path | Sequence[str | Path], data_dir: str | Path, split: str, checkpoint: str | None = None,
    beam: int = 1, alpha: float = 0.75, length_penalty: str = "book", batch_size: int | None = None,
    precision: str = "auto", device: str = "auto", quantize: str = "none", shortlist: int = 0,
) -> tuple[list[str], list[list[str]]]:
    """Translate a data directory's dev or test sources with the model's (an ensemble's: the
    first model's) own output length limit; return outputs and their references. A
    ``shortlist`` is learnt from the same data directory's training split."""
    if split not in ("dev", "test"):
        raise UsageError(f"--split must be dev or test, not {split!r}")
    evalset = DataDir(data_dir).eval_set(split)
    translator = Translator(
        models, checkpoint, device, precision=precision, quantize=quantize, shortlist=shortlist, shortlist_data=data_dir
    )
    max_len_a, max_len_b = translator.run.recipe.model.length_limit()
    options = SearchOptions(beam=beam, alpha=alpha, length_penalty=length_penalty, max_len_a=max_len_a, max_len_b=max_len_b)
    outputs = translator.translate(evalset.sources, options, batch_size)
    return outputs, evalset.references


def interactive(translator: Translator, options: SearchOptions, console, tokenized: bool = False) -> None:
    """A prompt that translates each line as it is typed (Ctrl-D ends)."""
    console.print(f"mtkit: {translator.src.lang} → {translator.tgt.lang}; type a sentence, Ctrl-D to quit")
    while True:
        try:
            line = input("> ")
        except EOFError:
            console.print()
            return
        for text, hyp in translator.nbest([line], options, tokenized=tokenized)[0]:
            print(text if options.nbest == 1 else f"{hyp.score:.4f}\t{text}", flush=True)
