"""The peers benchmark: Joey NMT, the book's code (d2l) and mtkit on one split, one after the other.

    python benchmarks/peers/compare.py --data ../shared/data/fra-eng.zip [--budget 600] [--quick]
    (make bench-peers DATA=... [QUICK=1] [BUDGET=600]; about 60 minutes with the default budget)

Every system trains for the same wall-clock budget on the same machine (counted from its first
training step: data loading is left out, its validations are not), then translates the same
2,000 test sentences, and all outputs are scored by the same sacreBLEU call (`mtkit evaluate`:
cased, 13a, multi-reference against the data directory's test.refs.jsonl).

- The split is the one in mtkit's data directory for the best recipe (``--recipe``); its text
  files feed everyone: Joey NMT reads ``train``/``dev``/``test`` ``.en``/``.fr``, the book's
  code ``train`` and ``test``, and mtkit's word-level data directories are preprocessed from
  the same files (``--train``, ``--dev``, ``--test``, every reference kept).
- Joey NMT 2.3.0 (its own virtual environment, ``--venv``, with the same torch as mtkit's): its
  recurrent model, a 2-layer bidirectional GRU encoder of 256 units, a GRU decoder with
  Bahdanau attention (its input feeding and bridge), word vocabularies (min freq 2) after its
  Moses pre-tokeniser, batches of 128 sentences, Adam 0.005, clipping at 1, token-normalised
  loss; stopped by SIGINT (it then saves latest.ckpt) when the budget runs out. It translates
  raw text (``python -m joeynmt translate``) and detokenises with Moses itself.
- The book's code: ``book_d2l.py`` (see there), greedy only, as in the book.
- mtkit at each peer's model size and batch (128 sentences, length-bucketed), and mtkit's best
  recipe as it ships; greedy and beam 5 (``mtkit translate``, decoding in the training precision).

Target tokens/s counts non-padding target tokens (``<eos>`` included) per second of training,
validations excluded: mtkit from metrics.jsonl, Joey NMT the mean of its logged windows of 10
updates, the book's code over its whole loop. Decoding sentences/s: the translation command's
wall time on the test sources less its wall time on one sentence (start-up and model loading);
Joey NMT decodes 256 sentences a batch (``--decode-batch``; its default is 64), mtkit with its
defaults (512 sentences greedy, 102 with beam 5), the book's code all of them in one batch.
Peak memory: the peak resident set of the training process. The report is also written to
WORK/results.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from measure import decode_speed, mtkit, mtkit_command, read_metrics, run_measured, score_bleu, training_throughput  # noqa: E402

JOEY = "joeynmt==2.3.0"
D2L = "d2l==1.0.3"
# d2l.torch imports these at the top (its plotting, data and vision helpers); torchvision gets
# a stand-in in book_d2l.py, since no build for this torch is at hand.
D2L_IMPORTS = ["pandas", "requests", "ipython", "matplotlib", "matplotlib-inline", "scipy", "pillow"]
SYSTEMS = ("joey", "book", "mtkit-joey", "mtkit-book", "mtkit-best")
PEER_OF = {"mtkit-joey": "joey", "mtkit-book": "book"}
NAMES = {"joey": "Joey NMT 2.3.0", "book": "the book's code (d2l 1.0.3)"}
JOEY_LOG_EVERY = 10
VALID_EVERY = 400  # updates between validations, for Joey NMT and mtkit alike


@dataclass
class Result:
    key: str  # one of SYSTEMS
    system: str
    configuration: str
    tokens_per_second: float
    epochs: float
    peak_mb: float
    bleu: dict[int, float] = field(default_factory=dict)  # beam size → test BLEU
    speed: dict[int, float] = field(default_factory=dict)  # beam size → sentences/s


# -- configurations ---------------------------------------------------------------------------


def joey_config(data: Path, model_dir: Path, src: str, tgt: str, beam: int = 1,
                decode_batch: int = 256, load_model: Path | None = None) -> dict:
    """Joey NMT's configuration for the issue's recurrent model. Written as JSON, which YAML
    reads (so no YAML writer is needed)."""
    side = {"level": "word", "lowercase": False, "max_length": 50, "voc_min_freq": 2,
            "tokenizer_cfg": {"pretokenizer": "moses"}}
    rnn = {"type": "recurrent", "rnn_type": "gru", "embeddings": {"embedding_dim": 256},
           "hidden_size": 256, "dropout": 0.0}
    testing = {"beam_size": beam, "beam_alpha": 1.0, "batch_size": decode_batch, "batch_type": "sentence",
               "eval_metrics": ["bleu"]}
    if load_model is not None:
        testing["load_model"] = str(load_model)
    return {
        "name": "peers-joey", "joeynmt_version": "2.3.0", "use_cuda": False, "fp16": False, "random_seed": 1,
        "data": {"train": str(data / "train"), "dev": str(data / "dev"), "test": str(data / "test"),
                 "dataset_type": "plain", "src": {"lang": src, **side}, "trg": {"lang": tgt, **side}},
        "testing": testing,
        "training": {
            "model_dir": str(model_dir), "overwrite": True, "optimizer": "adam", "learning_rate": 0.005,
            # A constant rate: its plateau scheduler passes `verbose`, which current torch refuses.
            "scheduling": "exponential", "decrease_factor": 1.0,
            "clip_grad_norm": 1.0, "normalization": "tokens", "batch_size": 128, "batch_type": "sentence",
            "epochs": 10_000, "validation_freq": VALID_EVERY, "logging_freq": JOEY_LOG_EVERY,
            "early_stopping_metric": "bleu", "keep_best_ckpts": 1, "shuffle": True,
        },
        "model": {
            "encoder": {**rnn, "bidirectional": True, "num_layers": 2},
            "decoder": {**rnn, "num_layers": 1, "hidden_dropout": 0.0, "attention": "bahdanau",
                        "input_feeding": True, "init_hidden": "bridge"},
        },
    }


def joey_size_recipe(budget: float, precision: str) -> dict[str, dict]:
    """mtkit at Joey NMT's size: the same encoder, attention, vocabulary rule, batch and optimiser."""
    return {
        "data": {"tokenizer": "word", "normalize": "book-cased", "min_freq": 2, "max_len": 50},
        "model": {"cell": "gru", "impl": "fused", "embed": 256, "hidden": 256, "layers": 2, "decoder_layers": 1,
                  "bidirectional": True, "bridge": "linear", "attention": "bahdanau", "dropout": 0.0,
                  "tie_embeddings": False},
        "train": {"batch_size": 128, "lr": 0.005, "schedule": "constant", "warmup": 0, "clip_norm": 1.0,
                  "label_smoothing": 0.0, "max_time": budget, "valid_every": VALID_EVERY, "valid_beam": 1,
                  "stop_on": "bleu", "precision": precision, "seed": 1},
    }


def toml_text(recipe: dict[str, dict]) -> str:
    def value(v: object) -> str:
        return str(v).lower() if isinstance(v, bool) else json.dumps(v)

    return "\n".join(f"[{section}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in values.items())
                     for section, values in recipe.items())


def recipe_precision(recipe: Path) -> str:
    """The precision a recipe trains in, which its translations use too (auto is fp32 on a CPU)."""
    with open(recipe, "rb") as f:
        precision = tomllib.load(f).get("train", {}).get("precision", "auto")
    return precision if precision in ("fp32", "bf16") else "fp32"


def book_size_args(budget: float, precision: str) -> list[str]:
    """mtkit at the book's size: recipes/d2l-full.toml (the book's model and data handling on the
    whole corpus) with the book's batches of 128 sentences."""
    return ["--recipe", REPO / "recipes" / "d2l-full.toml", "--batch-size", "128", "--precision", precision,
            "--max-time", f"{budget:g}s", "--valid-every", str(VALID_EVERY)]


# -- measurements -----------------------------------------------------------------------------


def joey_training_stats(log_text: str) -> tuple[float, int]:
    """(mean target tokens/s over the logged windows, updates done) from Joey NMT's train.log."""
    rates = [float(r) for r in re.findall(r"Tokens per Sec:\s*([\d.]+)", log_text)]
    steps = [int(s) for s in re.findall(r"Step:\s*(\d+)", log_text)]
    stopped = re.findall(r"Interrupt at epoch \d+, step (\d+)", log_text)
    return (statistics.mean(rates) if rates else float("nan"),
            int(stopped[-1]) if stopped else (steps[-1] if steps else 0))


def parameters_from_log(text: str) -> int:
    match = re.search(r"([\d,]+) parameters", text) or re.search(r"Total params:\s*(\d+)", text)
    return int(match.group(1).replace(",", "")) if match else 0


# -- the systems ------------------------------------------------------------------------------


def run_mtkit(key: str, train_args: list, data: Path, test_data: Path, work: Path, precision: str,
              configuration: str) -> Result:
    run = work / key
    command = mtkit_command("train", "--data", data, "--out", run, "--force", *train_args)
    log = work / f"{key}.train.log"
    _, peak = run_measured(command, log=log)
    metrics = read_metrics(run)
    tokens_per_second, steps, epochs = training_throughput(metrics), metrics[-1]["step"], metrics[-1]["epoch"]
    pairs = int(re.search(r"([\d,]+) pairs", (run / "train.log").read_text()).group(1).replace(",", ""))
    batch = json.loads((run / "config.json").read_text())["train"]
    # Sentence batches: updates × batch size; token batches: the completed epochs only.
    seen = steps * batch["batch_size"] / pairs if batch.get("batch_size") else float(epochs)
    params = parameters_from_log((run / "train.log").read_text())
    result = Result(key, "mtkit", f"{configuration}; {params:,} parameters", tokens_per_second, seen, peak)
    for beam in (1, 5):
        translate = mtkit_command("translate", "--model", run, "--beam", beam, "--precision", precision)
        hyp, result.speed[beam] = decode_speed(translate, test_data / "test.en", work, f"{key}.beam{beam}")
        result.bleu[beam] = score_bleu(hyp, test_data)
    return result


def run_joey(python: Path, data: Path, work: Path, budget: float, decode_batch: int) -> Result:
    model_dir = work / "joey"
    shutil.rmtree(model_dir, ignore_errors=True)  # the clock starts when its new train.log says EPOCH 1
    config = work / "joey.yaml"
    config.write_text(json.dumps(joey_config(data, model_dir, "en", "fr"), indent=1))
    train_log = model_dir / "train.log"
    deadline: list[float] = []

    def stop_after_budget(process: subprocess.Popen) -> None:
        if not deadline and train_log.is_file() and "EPOCH 1" in train_log.read_text(errors="replace"):
            deadline.append(time.perf_counter() + budget)
        if deadline and time.perf_counter() > deadline[0]:
            process.send_signal(signal.SIGINT)  # Joey NMT saves latest.ckpt and stops
            deadline[0] = float("inf")

    _, peak = run_measured([python, "-m", "joeynmt", "train", config, "--skip-test"],
                           log=work / "joey.train.out", until=stop_after_budget)
    log_text = train_log.read_text(errors="replace")
    tokens_per_second, steps = joey_training_stats(log_text)
    pairs = len((data / "train.en").read_text(encoding="utf-8").splitlines())
    vocab = [len((model_dir / f).read_text(encoding="utf-8").splitlines()) for f in ("src_vocab.txt", "trg_vocab.txt")]
    configuration = (f"2 × 256 biGRU encoder, GRU decoder, Bahdanau attention; Moses words min freq 2 "
                     f"({vocab[0]:,}/{vocab[1]:,}); 128 sentences; fp32; {parameters_from_log(log_text):,} parameters")
    result = Result("joey", NAMES["joey"], configuration, tokens_per_second, steps * 128 / pairs, peak)
    for beam in (1, 5):
        decode_config = work / f"joey.beam{beam}.yaml"
        decode_config.write_text(json.dumps(
            joey_config(data, model_dir, "en", "fr", beam, decode_batch, model_dir / "latest.ckpt"), indent=1))
        translate = [python, "-m", "joeynmt", "translate", decode_config]  # -o fails in 2.3.0: stdout
        hyp, result.speed[beam] = decode_speed(translate, data / "test.en", work, f"joey.beam{beam}")
        result.bleu[beam] = score_bleu(hyp, data)
    return result


def run_book(python: Path, data: Path, work: Path, budget: float, num_steps: int) -> Result:
    out = work / "book"
    command = [python, HERE / "book_d2l.py", "--data", data, "--out", out, "--budget", budget,
               "--num-steps", num_steps]
    _, peak = run_measured(command, log=work / "book.log")
    r = json.loads((out / "result.json").read_text())
    configuration = (f"2 × 256 GRU encoder-decoder, fixed context; book's words min freq 2 "
                     f"({r['src_vocab']:,}/{r['tgt_vocab']:,}), cut to {num_steps} tokens; 128 sentences; "
                     f"fp32; {r['parameters']:,} parameters")
    result = Result("book", NAMES["book"], configuration, r["tokens_per_second"], r["epochs"], peak)
    result.bleu[1] = score_bleu(out / "test.hyp", data)
    result.speed[1] = r["test_sentences"] / r["greedy_seconds"]
    return result


# -- peers' environment -----------------------------------------------------------------------


def pip(python: Path, *args: str) -> str | None:
    """Run pip; return None on success, else the last line of its error."""
    done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"pip exited with {done.returncode}"


def torch_requirement() -> list[str]:
    """The torch of this environment, pinned (the CPU build where this one is)."""
    import torch

    version = torch.__version__
    requirement = [f"torch=={version.split('+')[0]}"]
    if version.endswith("+cpu"):
        requirement += ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    return requirement


def peers_environment(venv: Path, wanted: set[str]) -> tuple[Path | None, dict[str, str]]:
    """Create (once) the peers' virtual environment; return its python and, for each peer that
    cannot be installed, the reason."""
    python = venv / "bin" / "python"
    reasons: dict[str, str] = {}
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if made.returncode != 0:
            return None, {peer: f"cannot create {venv}: {made.stderr.strip()}" for peer in wanted}
    if not (venv / ".torch-ok").exists():
        error = pip(python, *torch_requirement())
        if error:
            return None, {peer: f"cannot install torch into {venv}: {error}" for peer in wanted}
        (venv / ".torch-ok").touch()
    steps = {"joey": [[JOEY, "importlib_metadata"]],  # 2.3.0 imports importlib_metadata undeclared
             "book": [["--no-deps", D2L], D2L_IMPORTS]}
    for peer in sorted(wanted):
        marker = venv / f".{peer}-ok"
        if marker.exists():
            continue
        error = next((e for e in (pip(python, *step) for step in steps[peer]) if e), None)
        if error:
            reasons[peer] = f"cannot install {NAMES[peer]}: {error}"
        else:
            marker.touch()
    same = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    import torch

    if same.stdout.strip() != torch.__version__:
        return None, {peer: f"{venv} has torch {same.stdout.strip() or '?'}, not {torch.__version__}" for peer in wanted}
    return python, reasons


# -- data -------------------------------------------------------------------------------------


def write_eval_tsv(data: Path, split: str, out: Path) -> Path:
    """A split's sources with every reference, as TSV pairs: `preprocess --dev/--test` regroups them."""
    sources = (data / f"{split}.en").read_text(encoding="utf-8").splitlines()
    refs = [json.loads(line) for line in (data / f"{split}.refs.jsonl").read_text(encoding="utf-8").splitlines()]
    out.write_text("".join(f"{s}\t{r}\n" for s, rs in zip(sources, refs) for r in rs), encoding="utf-8")
    return out


def derived_data(data: Path, out: Path, options: list, log: Path) -> Path:
    """A data directory with other tokenisation but the same split, preprocessed from ``data``'s files."""
    dev, test = write_eval_tsv(data, "dev", out.with_suffix(".dev.tsv")), write_eval_tsv(data, "test", out.with_suffix(".test.tsv"))
    mtkit("preprocess", "--train", data / "train", "--dev", dev, "--test", test, "--out", out, "--force", *options, log=log)
    for split in ("dev", "test"):
        if (out / f"{split}.en").read_text() != (data / f"{split}.en").read_text():
            raise RuntimeError(f"{out}: the {split} split differs from {data}'s")
    return out


# -- the table --------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 0) -> str:
    return "–" if value is None or value != value else f"{value:,.{digits}f}"


def table(results: list[Result]) -> list[str]:
    lines = ["| system | configuration | target tokens/s | epochs | test BLEU greedy | beam 5 | "
             "sentences/s greedy | beam 5 | peak memory |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.system} | {r.configuration} | {_number(r.tokens_per_second)} | {_number(r.epochs, 2)} | "
            f"{_number(r.bleu.get(1), 1)} | {_number(r.bleu.get(5), 1)} | {_number(r.speed.get(1))} | "
            f"{_number(r.speed.get(5))} | {_number(r.peak_mb)} MB |")
    return lines


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b or a != a or b != b else f"{a / b:.2f}×"


def _difference(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{a - b:+.1f}"


def ratios(results: list[Result]) -> list[str]:
    """mtkit against each peer: at the peer's size, and with the best recipe."""
    by_key = {r.key: r for r in results}
    pairs = [(k, PEER_OF[k]) for k in ("mtkit-joey", "mtkit-book") if k in by_key and PEER_OF[k] in by_key]
    pairs += [("mtkit-best", peer) for peer in ("joey", "book") if "mtkit-best" in by_key and peer in by_key]
    lines = ["| mtkit ÷ peer | training tokens/s | BLEU greedy | BLEU beam 5 | sentences/s greedy | "
             "sentences/s beam 5 | peak memory |", "|---|---|---|---|---|---|---|"]
    for mine, theirs in pairs:
        m, p = by_key[mine], by_key[theirs]
        label = "at its size" if PEER_OF.get(mine) == theirs else "best recipe"
        lines.append(
            f"| mtkit ({label}) ÷ {p.system} | {_ratio(m.tokens_per_second, p.tokens_per_second)} | "
            f"{_difference(m.bleu.get(1), p.bleu.get(1))} | {_difference(m.bleu.get(5), p.bleu.get(5))} | "
            f"{_ratio(m.speed.get(1), p.speed.get(1))} | {_ratio(m.speed.get(5), p.speed.get(5))} | "
            f"{_ratio(m.peak_mb, p.peak_mb)} |")
    peers = [by_key[p] for p in ("joey", "book") if p in by_key]
    if "mtkit-best" in by_key and peers:
        best_peer = max(peers, key=lambda r: max(r.bleu.values(), default=0.0))
        mine = max(by_key["mtkit-best"].bleu.values(), default=float("nan"))
        theirs = max(best_peer.bleu.values(), default=float("nan"))
        lines.append("")
        lines.append(f"best test BLEU: mtkit {mine:.1f}, best peer ({best_peer.system}) {theirs:.1f}: {mine - theirs:+.1f}")
    return lines if len(lines) > 2 else []


def environment(python: Path | None) -> list[str]:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    mtkit_version = subprocess.run([sys.executable, "-m", "mtkit", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [f"date {datetime.date.today().isoformat()}; {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads; "
             f"Python {platform.python_version()}; torch {torch.__version__}; {mtkit_version}"]
    if python is not None:
        script = ("import importlib.metadata as m\n"
                  "for p in ('torch', 'joeynmt', 'd2l'):\n"
                  "    try:\n        print(p, m.version(p))\n"
                  "    except m.PackageNotFoundError:\n        print(p, 'absent')")
        versions = subprocess.run([str(python), "-c", script], capture_output=True, text=True).stdout.splitlines()
        lines.append("peers' environment: " + ", ".join(versions))
    return lines


# -- main -------------------------------------------------------------------------------------


def run_system(key: str, args: argparse.Namespace, python: Path | None, data: Path, work: Path,
               budget: float) -> Result:
    if key == "joey":
        return run_joey(python, data, work, budget, args.decode_batch)
    if key == "book":
        return run_book(python, data, work, budget, args.book_num_steps)
    if key == "mtkit-joey":
        recipe = work / "joey-size.toml"
        recipe.write_text(toml_text(joey_size_recipe(budget, args.precision)))
        word = derived_data(data, work / "data-joey-size", ["--recipe", recipe], work / "preprocess.log")
        configuration = (f"Joey NMT's size: 2 × 256 biGRU encoder, GRU decoder, Bahdanau attention; words "
                         f"min freq 2; 128 sentences; {args.precision}")
        return run_mtkit(key, ["--recipe", recipe], word, data, work, args.precision, configuration)
    if key == "mtkit-book":
        word = derived_data(data, work / "data-book-size", ["--recipe", REPO / "recipes" / "d2l-full.toml"],
                            work / "preprocess.log")
        configuration = (f"the book's size (d2l-full.toml): 2 × 256 GRU encoder-decoder, fixed context; book's "
                         f"words min freq 2; 128 sentences; {args.precision}")
        return run_mtkit(key, book_size_args(budget, args.precision), word, data, work, args.precision, configuration)
    precision = recipe_precision(args.recipe)
    configuration = f"best recipe ({args.recipe.name}) as it ships; {precision}"
    return run_mtkit(key, ["--recipe", args.recipe, "--max-time", f"{budget:g}s"], data, data, work, precision,
                     configuration)



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="corpus (.zip/.tsv); default: download the book's")
    parser.add_argument("--data-dir", type=Path, default=None, help="use this mtkit data directory as the split (no preprocessing)")
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench" / "peers")
    parser.add_argument("--venv", type=Path, default=None, help="the peers' virtual environment [WORK/venv]")
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "gru-attention.toml", help="mtkit's best recipe")
    parser.add_argument("--budget", type=float, default=600, help="training seconds per system [600]")
    parser.add_argument("--quick", action="store_true", help="one minute per system: checks the script itself")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--precision", default="bf16", help="mtkit's precision at the peers' sizes [bf16]")
    parser.add_argument("--book-num-steps", type=int, default=9, help="the book's num_steps [9, as in the book]")
    parser.add_argument("--decode-batch", type=int, default=256, help="Joey NMT's sentences per decoding batch")
    args = parser.parse_args()
    budget = 60.0 if args.quick else args.budget
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    wanted_peers = {s for s in args.systems if s in NAMES}
    python, reasons = (None, {})
    if wanted_peers:
        python, reasons = peers_environment((args.venv or work / "venv").resolve(), wanted_peers)
        for peer in sorted(wanted_peers):
            if python is None or peer in reasons:
                print(f"skipped {NAMES[peer]}: {reasons.get(peer, 'no peers environment')}", flush=True)
        if python is None or not wanted_peers - set(reasons):
            print("peers benchmark skipped: no peer could be installed, so there is nothing to compare with")
            return 0
    available = [s for s in args.systems if s not in NAMES or (python is not None and s not in reasons)]

    if args.data_dir is not None:
        data = args.data_dir.resolve()
    else:
        data = work / "data"
        mtkit("preprocess", *([args.data] if args.data else []), "--recipe", args.recipe, "--out", data, "--force",
              log=work / "preprocess.log")
    print(f"split: {data} ({len((data / 'train.en').read_text().splitlines()):,} training pairs, "
          f"{len((data / 'test.en').read_text().splitlines()):,} test sources); budget {budget:g} s per system", flush=True)

    results: list[Result] = []
    for key in available:
        started = time.perf_counter()
        try:
            results.append(run_system(key, args, python, data, work, budget))
        except Exception as error:  # one system's failure costs its row, not the whole run
            print(f"{key} failed: {error}", flush=True)
            continue
        print(json.dumps({**results[-1].__dict__, "seconds": round(time.perf_counter() - started)}), flush=True)

    report = environment(python) + [f"command: {shlex.join(sys.argv)}", ""] + table(results) + [""] + ratios(results)
    (work / "results.md").write_text("\n".join(report) + "\n")
    print("\n" + "\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
