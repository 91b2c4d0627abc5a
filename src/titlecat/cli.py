"""The ``titlecat`` command: parses arguments, then calls the library.  Nothing else."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from pathlib import Path


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model, pick the best epoch on validation, evaluate once on test")
    _train_options(p)
    p.add_argument("--teacher", metavar="DIR", help="learn from this model bundle's probabilities too "
                   "(distillation: see titlecat distill)")


def _add_distill(sub) -> None:
    p = sub.add_parser("distill", help="train a network that learns from a teacher's probabilities (e.g. the "
                       "ensemble's): its accuracy at one network's speed")
    p.add_argument("--teacher", required=True, metavar="DIR", help="the teacher's model bundle (any kind)")
    _train_options(p, default_model="mlp",
                   default_config="configs/<model>-distill.yaml where there is one, else configs/<model>.yaml")


def _train_options(p, default_model: str | None = None, default_config: str = "configs/<model>.yaml") -> None:
    """The options of ``train`` and ``distill`` (the same training; distill's student is an mlp by default)."""
    p.add_argument("--model", default=default_model,
                   help=f"model name (mlp, ...); picks {default_config} unless --config is given"
                   + (f" (default: {default_model})" if default_model else ""))
    p.add_argument("--train", help="training file (.jsonl[.gz] or .csv[.gz]); required unless --resume")
    p.add_argument("--test", help="test file, read once at the end with the best checkpoint")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--validation", help="validation file (default: a stratified split of --train)")
    val.add_argument("--val-fraction", type=float, help="share of each category carved from --train for validation")
    p.add_argument("--config", help=f"YAML config (default: the shipped {default_config})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.001 (repeatable)")
    p.add_argument("--output", help="directory for the model bundle (and the checkpoint while training)")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted training whose --output was DIR, "
                   "with its config, files and MLflow run")
    p.add_argument("--experiment", default="titlecat", help="MLflow experiment name (default: titlecat)")
    p.add_argument("--run-name", help="MLflow run name")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip and count malformed rows instead of stopping")
    p.add_argument("--language", choices=["all", "spanish", "portuguese"], help="keep rows of this language only")
    p.add_argument("--label-quality", choices=["all", "reliable", "unreliable"], help="keep rows of this quality only")
    p.add_argument("--unreliable-weight", type=float, metavar="W",
                   help="loss weight of 'unreliable' training rows, 0..1 (default: config, 1.0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: config, auto)")
    p.add_argument("--cache-dir", help="preprocessing cache (default: $TITLECAT_CACHE or ~/.cache/titlecat)")
    p.add_argument("--info-json", metavar="FILE",
                   help="also write the run's facts (clf.info: sizes, seconds per phase, per-epoch metrics, "
                        "scores) to FILE as JSON, for scripts")
    p.add_argument("--register", metavar="NAME", help="register the run's MLflow model as a new version of NAME "
                   "in the MLflow Model Registry")
    p.add_argument("--alias", dest="aliases", action="append", default=[], metavar="ALIAS",
                   help="with --register: point ALIAS (e.g. champion) at the new version (repeatable)")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model bundle on a labelled file")
    p.add_argument("--model", required=True, help="model bundle directory (the --output of train)")
    p.add_argument("--data", required=True, help="labelled file (.jsonl[.gz] or .csv[.gz])")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", help="write the per-category report (CSV) here")
    p.add_argument("--skip-bad-rows", action="store_true")
    p.add_argument("--language", choices=["all", "spanish", "portuguese"], default="all")
    p.add_argument("--label-quality", choices=["all", "reliable", "unreliable"], default="all",
                   help="score rows of this label quality only")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="categories of titles (arguments, or one per line on stdin)")
    p.add_argument("--model", required=True, help="model bundle directory")
    p.add_argument("--top-k", type=int, default=1, help="categories per title (default 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per title")
    p.add_argument("--language", choices=["spanish", "portuguese"],
                   help="language of the titles (for models trained with text.language_token)")
    p.add_argument("--input", help="challenge test file (id,title,language): write a submission to --output")
    p.add_argument("--output", help="submission CSV (id,category) written from --input")
    p.add_argument("--chunk-size", type=int, default=10_000, help="rows read and predicted at a time (--input)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="--input: skip unreadable rows (named on stderr; their ids are missing from the submission) "
                        "instead of stopping")
    p.add_argument("titles", nargs="*", help="titles; none = read stdin")


def _add_download(sub) -> None:
    from .download import COURSE_URL

    p = sub.add_parser("download", help="download and unpack the course data set")
    p.add_argument("--url", default=COURSE_URL, help=f"archive address (default: {COURSE_URL})")
    p.add_argument("--dest", default="data", help="directory to unpack into (default: ./data)")
    p.add_argument("--sha256", help="the archive's expected SHA-256: a download that does not match is refused "
                   "(default: the pinned digest of --url, if any)")
    p.add_argument("--retries", type=int, default=2, help="further attempts after a failed download (default 2)")
    p.add_argument("--cache-dir", help="keep the archive here (default: $TITLECAT_CACHE/downloads)")


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="search hyperparameters (Optuna) on validation, never test; write the best "
                       "config")
    p.add_argument("--model", help="model name; its config's 'search' section is the space searched")
    p.add_argument("--config", help="YAML config with a 'search' section (default: the shipped configs/<model>.yaml)")
    p.add_argument("--train", required=True, help="training file (.jsonl[.gz] or .csv[.gz])")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--validation", help="validation file (default: a stratified split of --train)")
    val.add_argument("--val-fraction", type=float, help="share of each category carved from --train for validation")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config value for every trial, e.g. --set train.epochs=5, searched or not (repeatable)")
    p.add_argument("--trials", type=int, required=True, help="trials this process runs (other workers add theirs)")
    p.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")
    p.add_argument("--output", required=True, help="YAML file for the best config (titlecat train --config takes it)")
    p.add_argument("--storage", help="Optuna storage URL shared by the workers of a study, e.g. "
                   "postgresql://user:pw@host/db (default: sqlite:///optuna.db beside --output)")
    p.add_argument("--study-name", help="study name (default: titlecat-<model>); an existing study is joined")
    p.add_argument("--experiment", default="titlecat", help="MLflow experiment name (default: titlecat)")
    p.add_argument("--no-tracking", action="store_true", help="do not log the study and its trials to MLflow")
    p.add_argument("--seed", type=int, help="seed of the sampler (default: random; give each worker its own)")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="train each trial N times (other training seeds, and other validation splits when carved "
                   "from --train) and score it by the mean: a fairer ranking at N times the cost (default: 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: config, auto)")
    p.add_argument("--cache-dir", help="preprocessing cache (default: $TITLECAT_CACHE or ~/.cache/titlecat)")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write a Markdown report of the MLflow runs of an experiment")
    p.add_argument("--experiment", default="titlecat", help="MLflow experiment name (default: titlecat)")
    p.add_argument("--output", required=True, help="Markdown file; its plot is written beside it")
    p.add_argument("--categories", type=int, default=20, help="categories of lowest recall listed (default 20)")
    p.add_argument("--pairs", type=int, default=10, help="most confused category pairs listed (default 10)")


def _add_ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="combine trained model bundles into one ensemble bundle")
    p.add_argument("--models", nargs="+", required=True, metavar="DIR", help="member bundles (2 or more)")
    p.add_argument("--weights", nargs="+", type=float, metavar="W", help="one weight per member (default: equal)")
    p.add_argument("--output", required=True, help="directory for the ensemble's bundle (members copied inside)")
    p.add_argument("--train", help="the members' training file: print the ensemble's score on their validation "
                   "rows (the split their data settings carve)")
    p.add_argument("--validation", help="with --train: the validation file the members were trained with")


def _add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="a smaller copy of a model bundle: embedding tables pruned and stored in "
                       "fewer bits (fastText's quantize)")
    p.add_argument("--model", required=True, help="model bundle directory (a network, or an ensemble of them)")
    p.add_argument("--output", required=True, help="directory for the quantized bundle")
    p.add_argument("--method", choices=["int8", "int4", "pq", "none"], default="int8",
                   help="int8 or int4: a scale and offset per row; pq: product quantization, a byte per --dsub "
                   "values; none: pruning only (default: int8)")
    p.add_argument("--keep", type=int, default=0, metavar="ROWS",
                   help="keep this many embedding rows over all tables, those that carry most (most used, largest); "
                   "default 0: every row some title can use")
    p.add_argument("--dsub", type=int, default=2, help="pq: values coded by one byte (default 2)")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model: REST API (POST /predict) and a web page, on uvicorn")
    p.add_argument("--model", required=True, help="model bundle directory, or an MLflow model URI: "
                   "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model (MLFLOW_TRACKING_URI honoured)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model "
                   "(default 1)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: the cores shared among the "
                   "workers)")
    p.add_argument("--max-batch", type=int, default=10_000, help="titles per request (default 10,000)")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="request body size in MB (default 8)")
    p.add_argument("--no-access-log", action="store_true", help="no log line per request")


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in titlecat's form: one ``titlecat: error:`` line (exit 2)
    that names the command and where to read its usage, like every other error of the command line."""

    def error(self, message: str):
        command = self.prog.removeprefix("titlecat").strip()
        self.exit(2, f"titlecat: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="titlecat", description="Product-title categorisation (MeLi 2019).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_distill(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_download(sub)
    _add_tune(sub)
    _add_report(sub)
    _add_ensemble(sub)
    _add_quantize(sub)
    _add_serve(sub)
    return parser


def _overrides(sets: list[str], flags: dict[str, object]) -> dict[str, object]:
    """The config overrides of a command: its ``--set key=value`` items, then the typed flags
    that were given (``None``: not given), which win over ``--set``."""
    from .config import parse_override

    return {**dict(parse_override(o) for o in sets), **{k: v for k, v in flags.items() if v is not None}}


def cmd_train(args) -> int:
    from .recipe import train

    overrides = _overrides(args.overrides, {
        "data.val_fraction": args.val_fraction, "data.unreliable_weight": args.unreliable_weight,
        "data.skip_bad_rows": args.skip_bad_rows or None, "data.language": args.language,
        "data.label_quality": args.label_quality, "train.device": args.device})
    if args.resume:  # the interrupted training's directory; files not given are those it started with
        if args.output is not None and Path(args.output).resolve() != Path(args.resume).resolve():
            raise ValueError(f"--resume {args.resume} continues the training in that directory; drop --output "
                             f"{args.output} (or give the same directory)")
        args.output = args.resume
    elif args.train is None or args.output is None:
        raise ValueError("train needs --train FILE and --output DIR (or --resume DIR to continue an interrupted run)")
    model, config = args.model, args.config
    if args.command == "distill" and not args.resume and config:
        model = None  # distill's --model has a default (mlp); a --config names its own model
    clf = train(args.train, args.test, args.validation, model=model, config=config, overrides=overrides,
                output=args.output, tracking=not args.no_tracking, experiment=args.experiment,
                run_name=args.run_name, cache_dir=args.cache_dir, resume=bool(args.resume), teacher=args.teacher,
                register=args.register, aliases=args.aliases)
    info = clf.info
    for m in info.members:  # an ensemble: each member's own validation, then the ensemble's
        print(f"member {m.model} ({m.config}): best epoch {m.best_epoch}, validation balanced accuracy "
              f"{m.best_val_balanced_accuracy:.4f}")
    if info.teacher_seconds is not None:
        print(f"teacher {info.teacher}: its logits of the training and transfer titles in {info.teacher_seconds:.0f} s")
    chosen = f"ensemble of {len(info.members)}" if info.members else f"best epoch {info.best_epoch}"
    print(f"{chosen}: validation balanced accuracy {info.best_val_balanced_accuracy:.4f}")
    if info.n_refit is not None:
        print(f"refitted on all {info.n_refit:,} training rows for {info.refit_epochs} epochs (train.refit)")
    if info.test_balanced_accuracy is not None:
        print(f"test balanced accuracy {info.test_balanced_accuracy:.4f}  accuracy {info.test_accuracy:.4f}  "
              f"({info.test_n} titles)")
    print(f"model bundle: {Path(args.output).resolve()}")
    print(f"tracking: {info.tracking}")
    if info.registered:
        print(f"registered: {info.registered}" + "".join(
            f"  (models:/{args.register}@{a})" for a in args.aliases))
    if args.info_json:
        import dataclasses

        Path(args.info_json).write_text(to_json(dataclasses.asdict(info), indent=1) + "\n",
                                        encoding="utf-8")
    return 0


def to_json(obj, **kwargs) -> str:
    """Valid JSON, always: a NaN or infinite number (a loss with no known category to average
    over) becomes null; the standard forbids both, and strict parsers reject them."""
    def finite(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: finite(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [finite(v) for v in o]
        return o

    return json.dumps(finite(obj), allow_nan=False, default=str, **kwargs)


def cmd_evaluate(args) -> int:
    from .classifier import load

    clf = load(args.model)
    out = clf.evaluate(args.data, report=args.report, skip_bad_rows=args.skip_bad_rows, language=args.language,
                       label_quality=args.label_quality)
    if out["unseen_categories"]:
        print(f"titlecat: {sum(out['unseen_categories'].values())} rows of {args.data} have categories never seen "
              f"in training ({', '.join(list(out['unseen_categories'])[:5])}); they count as errors", file=sys.stderr)
    if args.json:
        print(to_json(out))
    else:
        print(f"balanced accuracy {out['balanced_accuracy']:.4f}  accuracy {out['accuracy']:.4f}  "
              f"loss {out['loss']:.4f}  n {out['n']}")
        for lang, s in out.get("per_language", {}).items():
            print(f"  {lang}: balanced accuracy {s['balanced_accuracy']:.4f}  accuracy {s['accuracy']:.4f}  n {s['n']}")
    return 0


def cmd_predict(args) -> int:
    from .classifier import load

    if args.input or args.output:
        if not (args.input and args.output):
            raise ValueError("predict: --input and --output go together (test file in, submission out)")
        if args.titles:
            raise ValueError("predict: give titles or --input, not both")
        if args.top_k != 1 or args.json or args.language:
            raise ValueError("predict --input writes id,category (the top category, each row's own language); "
                             "--top-k, --json and --language are for titles")
        stats = load(args.model).predict_file(args.input, args.output, chunk_size=args.chunk_size,
                                              skip_bad_rows=args.skip_bad_rows)
        langs = ", ".join(f"{k} {v}" for k, v in stats.languages.items())
        print(f"submission: {stats.rows} ids ({langs}) -> {args.output}"
              + (f"; {stats.empty_titles} empty titles" if stats.empty_titles else ""))
        if stats.read.skipped:
            print(f"titlecat: warning: skipped {stats.read.skipped} bad rows of {args.input}; their ids are NOT in "
                  f"the submission: " + "; ".join(stats.read.examples)
                  + ("; ..." if stats.read.skipped > len(stats.read.examples) else ""), file=sys.stderr)
        return 0
    if args.skip_bad_rows:
        raise ValueError("predict: --skip-bad-rows is for --input files (titles given as arguments or on stdin "
                         "are all predicted)")
    titles = args.titles or _stdin_lines()
    if not titles:
        raise ValueError("no titles given (pass them as arguments or one per line on stdin)")
    clf = load(args.model)
    labels, probs = clf.predict(titles, k=args.top_k, language=args.language)
    for title, labs, ps in zip(titles, labels, probs):
        if args.json:
            line = json.dumps({"title": title, "categories": list(labs),
                               "probabilities": [round(float(p), 6) for p in ps]}, ensure_ascii=False)
            # one object per line for any reader: the characters some of them take for line ends, escaped
            print(line.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
        else:
            print("\t".join(f"{lab} {p:.3f}" for lab, p in zip(labs, ps)))
    return 0


def _stdin_lines() -> list[str]:
    """Titles on stdin, one per line, as UTF-8: a line that is not is refused with its number, as in
    data files (a text-mode stdin would replace or escape the bytes and predict a garbled title)."""
    from .data import DataError

    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a StringIO (tests, embedding): already text
        return [line.rstrip("\r\n") for line in sys.stdin]
    lines = []
    for n, raw in enumerate(stream, 1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as e:
            raise DataError(f"<stdin>:{n}: bytes that are not UTF-8 at column {e.start + 1}; give titles as "
                            "UTF-8 text") from None
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]  # a byte-order mark, as data files drop it
    return lines


def cmd_download(args) -> int:
    from .cache import default_cache_dir
    from .download import fetch

    cache_dir = args.cache_dir or default_cache_dir() / "downloads"
    files = fetch(args.url, args.dest, sha256=args.sha256, cache_dir=cache_dir, retries=args.retries)
    total = sum(f.stat().st_size for f in files)
    print(f"{len(files)} files, {total / 1e6:.1f} MB in {Path(args.dest).resolve()}:")
    for f in files:
        print(f"  {f}  ({f.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_tune(args) -> int:
    from .tune import command_line, run_study

    overrides = _overrides(args.overrides, {"data.val_fraction": args.val_fraction, "train.device": args.device})
    res = run_study(args.train, args.validation, model=args.model, config=args.config, overrides=overrides,
               trials=args.trials, timeout=args.timeout, output=args.output, storage=args.storage,
               study_name=args.study_name, experiment=args.experiment, tracking=not args.no_tracking,
               cache_dir=args.cache_dir, seed=args.seed, command=command_line(args.argv), repeats=args.repeats)
    print(f"best: trial {res.trial} of study {res.study!r} ({res.complete} complete, {res.pruned} pruned): "
          f"validation balanced accuracy {res.value:.4f}")
    print(f"config: {res.output.resolve()}  (titlecat train --config {res.output} --train FILE --test FILE "
          "--output DIR)")
    print(f"study: {res.storage}" + (f"; MLflow run {res.mlflow_parent_run_id}" if res.mlflow_parent_run_id else ""))
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    out = write_report(args.output, experiment=args.experiment, n_categories=args.categories, n_pairs=args.pairs)
    print(f"report: {out.markdown.resolve()} ({out.runs} runs; plot {out.plot.name if out.plot else 'none'})")
    return 0


def cmd_ensemble(args) -> int:
    from .bundle import check_output_dir
    from .classifier import load
    from .models.ensemble import Ensemble

    if args.validation and not args.train:
        raise ValueError("ensemble: --validation goes with --train (the members' training file)")
    check_output_dir(args.output)  # before loading gigabytes of members
    ens = Ensemble([load(d) for d in args.models], args.weights)
    if args.train:
        val = ens.validate(args.train, args.validation)
        for d, member in zip(args.models, val["members"]):
            print(f"member {d}: validation balanced accuracy {member['balanced_accuracy']:.4f}")
        print(f"ensemble of {len(ens.members)}: validation balanced accuracy {val['balanced_accuracy']:.4f}  "
              f"({val['n']} titles)")
    print(f"ensemble bundle: {ens.save(args.output).resolve()}")
    return 0


def cmd_quantize(args) -> int:
    from .bundle import check_output_dir, directory_bytes
    from .classifier import load

    check_output_dir(args.output)  # before loading a large model
    load(args.model).quantize(args.method, keep=args.keep, dsub=args.dsub).save(args.output)
    before, after = directory_bytes(args.model), directory_bytes(args.output)
    written = json.loads((Path(args.output) / "bundle.json").read_text(encoding="utf-8"))
    rows = written.get("quantization", {}).get("rows")
    print(f"quantized ({args.method}): {before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB ({after / before:.1%})"
          + (f"; embedding rows kept: {', '.join(f'{k} {v:,}' for k, v in rows.items())}" if rows else ""))
    print(f"quantized bundle: {Path(args.output).resolve()}  (score it: titlecat evaluate --model {args.output} "
          "--data FILE)")
    return 0


def cmd_serve(args) -> int:
    from .serve import ServeOptions, serve

    serve(ServeOptions(model=args.model, host=args.host, port=args.port, workers=args.workers, threads=args.threads,
                       max_batch=args.max_batch, max_body_bytes=int(args.max_body_mb * 1e6),
                       access_log=not args.no_access_log))
    return 0


COMMANDS = {"train": cmd_train, "distill": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "download": cmd_download, "tune": cmd_tune, "report": cmd_report, "ensemble": cmd_ensemble,
            "quantize": cmd_quantize, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before any heavy import: --help and usage errors answer at once
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for files that record their command

    from .bundle import BundleError
    from .config import ConfigError
    from .data import DataError
    from .download import DownloadError
    from .tracking import TrackingError

    restore = _on_sigterm_raise()
    try:
        return COMMANDS[args.command](args)
    except (DataError, ConfigError, BundleError, DownloadError, TrackingError, ValueError) as e:
        print(f"titlecat: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that cannot be read or written (permissions, disk full): a message, not a traceback
        print(f"titlecat: error: {f'{e.filename}: ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from .checkpoint import resumable

        output = getattr(args, "output", None) if args.command in ("train", "distill") else None
        print(f"titlecat: {'terminated' if isinstance(e, Terminated) else 'interrupted'}"
              + (f"; continue with: titlecat train --resume {output}" if resumable(output) else ""), file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130  # 128 + the signal, as a shell reports it
    finally:
        restore()


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler, a container stopping) as an exception, like Ctrl-C: the
    files being written are removed and the last checkpoint kept, instead of the process
    vanishing with a multi-gigabyte temporary file left in ``checkpoint/``."""


def _on_sigterm_raise():
    """Make SIGTERM raise ``Terminated`` (in the main thread: Python allows handlers nowhere else);
    returns what puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())
