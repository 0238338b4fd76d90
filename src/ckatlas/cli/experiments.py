"""Subcommands that run whole experiments: demo, run, presets, report."""

from __future__ import annotations

import argparse

from ckatlas.cli._common import (
    add_detector_options,
    command,
    detector_from_args,
    detector_options_given,
    positive_float,
    positive_int,
)


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "demo",
        "the main job: train a depth x width grid on digits, map it, analyse it, write the report",
        """
        Run the 'demo' preset end to end on the built-in digits (no download): train
        ResNet-14/20/26 at widths 1/2, 1 and 2 (three seeds each) on half of digits,
        compute every model's CKA heatmap, find the blocks, run the PCA, probe, pruning,
        cross-seed, origins and error analyses, print the block fraction and strength across
        the grid and write
        DIR/report/index.html. About two minutes on a 2-core CPU (one process per core);
        --quick runs the 'tiny' preset instead (under a minute). Interrupted? Run the
        same command again: only the missing pieces are computed.
        """,
        [
            "ckatlas demo --out demo-out",
            "ckatlas demo --out /tmp/quick --quick",
            "ckatlas demo --out demo-out --jobs 1",
        ],
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the experiment directory to write")
    p.add_argument("--quick", action="store_true", help="the 'tiny' preset: a 2 x 2 grid, 1 epoch")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda or cuda:N (default: CUDA when present)")
    # The demo's models are small: one thread each is faster than two fighting over a
    # 2-core CPU, and one process per core keeps every core busy (BENCHMARKS.md).
    p.add_argument("--threads", type=positive_int, metavar="N", default=1,
                   help="PyTorch threads per process (default 1: fastest for the demo's small models)")
    p.add_argument("--jobs", type=positive_int, metavar="N", default=None,
                   help="processes training and analysing models side by side (default: one per CPU core, at most 4)")
    p.add_argument("--quiet", action="store_true", help="print only where the report is")
    p.set_defaults(func=_run_demo, on_interrupt="again")


def default_jobs() -> int:
    """One process per CPU core this process may use, at most 4 (the demo's default --jobs)."""
    from ckatlas.runtime.cpu import available_cores

    return max(1, min(4, available_cores()))


def _run_demo(args: argparse.Namespace) -> int:
    from ckatlas.experiment import run_experiment
    from ckatlas.io.files import check_writable_dir
    from ckatlas.report._page import ReportData
    from ckatlas.report.headline import headline_text
    from ckatlas.report.html import REPORT_FILE, write_report
    from ckatlas.io.summary import ExperimentSummary

    check_writable_dir(args.out, "the demo")
    jobs = args.jobs if args.jobs is not None else default_jobs()
    result = run_experiment("tiny" if args.quick else "demo", args.out, device=args.device, threads=args.threads,
                            jobs=jobs, quiet=args.quiet)
    report = result.root / REPORT_FILE
    if not report.is_file():  # the pipeline writes it; a directory from before the report existed may lack it
        write_report(result.root)
    if not args.quiet:
        print(headline_text(ExperimentSummary.load(result.summary_path), ReportData(result.root).claims))
    print(f"report: {report}")
    return 0


def add_run(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "run",
        "run an experiment: train a grid, map it with CKA, analyse it (resumable)",
        """
        Run an experiment described by a TOML file or a preset (`ckatlas presets`): train
        every model of its grid, compute each model's CKA heatmap (and cross-seed ones),
        find the block structure, run the analyses it asks for and write summary.json,
        all under --out. Run the same command again after a crash or Ctrl-C: only the
        missing pieces are computed. --out must be empty or hold this same experiment.

        With --executor ray the training runs, heatmaps and analyses are Ray tasks spread
        over a Ray cluster (pip install 'ckatlas[ray]'); --out must then be on a file
        system that every node sees.
        """,
        [
            "ckatlas run demo --out out/demo",
            "ckatlas run my_grid.toml --out out/grid --device cuda",
            "ckatlas run paper-depth --out out/depth --data-dir ~/data/cifar-10-batches-py",
            "ckatlas run paper-width --out out/width --data-dir /shared/cifar10 --executor ray --address auto",
            "ckatlas run demo --out out/demo --dry-run",
            "ckatlas run tiny --out out/tiny --jobs 2 --threads 1",
            "ckatlas run fashion-study --out out/fashion-confirm --seed-offset 100 --jobs 2",
        ],
    )
    p.add_argument("experiment", metavar="EXPERIMENT", help="a TOML file, or a preset name (see 'ckatlas presets')")
    p.add_argument("--out", required=True, metavar="DIR", help="the experiment directory")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this machine, one step after another or --jobs at once (default); ray: Ray tasks")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster to join (e.g. auto); default: start a local one")
    p.add_argument("--data-dir", metavar="DIR", help="where the dataset is (overrides [dataset] data_dir)")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda or cuda:N (default: CUDA when present; local executor)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="PyTorch threads (local executor; per job)")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="local executor: N processes computing independent steps side by side (default 1)")
    p.add_argument("--cpus-per-task", type=positive_int, default=1, metavar="N",
                   help="CPUs each Ray task that trains or runs a model declares (default 1)")
    p.add_argument("--gpus-per-task", type=positive_float, metavar="G",
                   help="GPUs each such Ray task declares (default: 1 when the cluster has GPUs)")
    p.add_argument("--seed-offset", type=int, default=0, metavar="K",
                   help="add K to every seed of the experiment: a replication on seeds not used for choosing (0)")
    p.add_argument("--dry-run", action="store_true", help="list the steps and which are done; compute nothing")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=_run_run, on_interrupt="again")


def _run_run(args: argparse.Namespace) -> int:
    from ckatlas.experiment import experiment_status, load_config, run_experiment
    from ckatlas.io.files import check_writable_dir
    from ckatlas.io.summary import ExperimentSummary

    config = load_config(args.experiment)
    if not args.dry_run:
        check_writable_dir(args.out, "the experiment")
    if args.data_dir is not None:
        config = config.with_data_dir(args.data_dir)
    if args.seed_offset:
        config = config.with_seed_offset(args.seed_offset)
    if args.dry_run:
        for step, done in experiment_status(config, args.out):
            print(f"{'done' if done else 'todo'}  {step.key}")
        return 0
    result = run_experiment(
        config,
        args.out,
        executor=args.executor,
        address=args.address,
        device=args.device,
        threads=args.threads,
        jobs=args.jobs,
        cpus_per_task=args.cpus_per_task,
        gpus_per_task=args.gpus_per_task,
        quiet=args.quiet,
    )
    if not args.quiet:
        summary = ExperimentSummary.load(result.summary_path)
        width = max(len(m.name) for m in summary.models)
        print(f"{'model':<{width}}  test acc  train acc  block fraction  block strength  block area")
        for m in summary.models:
            fit = m.train_accuracy
            print(f"{m.name:<{width}}  {m.test_accuracy:8.3f}  {'–' if fit is None else f'{fit:.3f}':>9}  "
                  f"{m.block_fraction:14.2f}  {m.block_strength:14.2f}  {m.block_area:10.2f}")
        print(f"summary: {result.summary_path}")
    return 0


def add_presets(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "presets",
        "list the experiments shipped with ckatlas (or print one)",
        """
        List the preset experiments that 'ckatlas run PRESET' accepts, each with what it
        needs (the data, and GPU hours estimated from its FLOPs: ckatlas.experiment.cost),
        or print one preset's TOML file (--show) to start your own experiment from it.
        """,
        ["ckatlas presets", "ckatlas presets --show demo > my_grid.toml"],
    )
    p.add_argument("--show", metavar="PRESET", help="print this preset's TOML file")
    p.set_defaults(func=_run_presets)


def _run_presets(args: argparse.Namespace) -> int:
    from ckatlas.experiment import list_presets, load_config, preset_description, preset_path
    from ckatlas.experiment.cost import estimate_cost

    if args.show is not None:
        print(preset_path(args.show).read_text(encoding="utf-8"), end="")
        return 0
    names = list_presets()
    width = max(len(n) for n in names)
    for name in names:
        config = load_config(name)
        cost = estimate_cost(config)
        needs = "" if config.dataset.name in ("digits", "fashion-mnist") else f"needs --data-dir ({config.dataset.name}); "
        estimate = f"{needs}{cost.line()}" if cost is not None else needs.rstrip("; ")
        print(f"{name:<{width}}  {preset_description(name)}\n{'':<{width}}  {estimate}")
    return 0


def add_report(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "report",
        "write an experiment's HTML report (one self-contained file)",
        """
        Write the report of a finished experiment ('ckatlas run ... --out DIR') as one
        HTML file with every figure embedded: the depth x width table of block fraction
        and accuracy with the finding in words, the heatmap grid with blocks outlined,
        the block table, block stability, first-PC, probe and pruning panels,
        cross-seed heatmaps and the error analysis, each from the saved results.
        'ckatlas run' already writes it to DIR/report/index.html; use this command to
        write it again or elsewhere.
        """,
        [
            "ckatlas report out/demo",
            "ckatlas report out/depth --out depth-report.html",
        ],
    )
    p.add_argument("experiment_dir", metavar="EXPERIMENT_DIR",
                   help="a finished experiment directory (it holds summary.json)")
    p.add_argument("--out", metavar="FILE", help="where to write the HTML (default: EXPERIMENT_DIR/report/index.html)")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from ckatlas.io.files import check_writable_file
    from ckatlas.report.html import write_report

    if args.out:
        check_writable_file(args.out, "the report", ".html")
    print(f"wrote {write_report(args.experiment_dir, args.out)}")
    return 0



def add_claims(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "claims",
        "test the paper's claims on a finished experiment, each by a statistic over its models",
        """
        Read a finished experiment directory and test each claim of Nguyen, Raghu & Kornblith
        (2021) that it holds the models and analyses for: block structure grows with width and
        with depth, and with less data (rank-trend permutation tests of block strength within
        each slice of the grid, also at a sweep of the detector's main setting); the first PC dominates and carries through a
        block; probes stall and deletions cost little inside a block; layers of two seeds match
        outside a block but not inside; wide and deep models make different errors. One line per
        claim: the statistic with its 95% bootstrap interval over seeds, its one-sided permutation
        p-value in the paper's direction and the other way, and the verdict at --alpha in one
        vocabulary: holds (significant in the paper's direction), contradicted (significant the
        other way), not established (neither). A trend claim is also decided under three named
        definitions of block structure (the paper's: the threshold rule's block fraction at CKA
        0.9; stands out: the contrast rule's block area; definition-free: the mean off-diagonal
        CKA), and the line says whether it agrees across definitions or depends on the
        definition. Beside it the verdict with the threshold rule of earlier releases
        (--compare none: not).
        The blocks are the experiment's; any detector option below finds them again on the
        saved heatmaps with the experiment's detector changed by the options given.

        Writes --out (JSON: every claim with the numbers behind it).
        """,
        [
            "ckatlas claims out/fashion",
            "ckatlas claims out/fashion --out out/fashion/claims.json --permutations 20000",
            "ckatlas claims out/fashion --min-score 0.6          # blocks found again with another setting",
        ],
    )
    p.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="a finished experiment directory")
    p.add_argument("--out", metavar="FILE", help="write the claims as JSON here")
    p.add_argument("--alpha", type=positive_float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--permutations", type=positive_int, default=10_000,
                   help="permutations per test (10000, as the headline and the report)")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations (default 0)")
    p.add_argument("--quiet", action="store_true", help="print only where the result is")
    p.add_argument("--compare", choices=("threshold", "none"), default="threshold",
                   help="a second detector whose verdicts are shown beside each claim's (threshold: the rule of "
                        "earlier releases at its defaults)")
    add_detector_options(p, inherit="the experiment's")
    p.set_defaults(func=_run_claims)


def _run_claims(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ckatlas.analysis import BlockDetector
    from ckatlas.analysis.trend import PERMUTATIONS
    from ckatlas.experiment.claims import CLAIMS_FILE, ClaimsResult, evaluate_claims, experiment_detector
    from ckatlas.io.files import check_writable_file

    if args.out:
        check_writable_file(args.out, "the claims", ".json")
    detector = None
    if detector_options_given(args):
        detector = detector_from_args(args, experiment_detector(args.experiment_dir))
    compare = BlockDetector(method="threshold") if args.compare == "threshold" else None
    saved = Path(args.experiment_dir).expanduser() / CLAIMS_FILE
    as_decided = (detector is None and args.alpha == 0.05 and args.permutations == PERMUTATIONS and args.seed == 0
                  and args.compare == "threshold")
    if as_decided and saved.is_file():  # the one verdict engine: what the experiment's claims step decided
        result = ClaimsResult.load(saved)
        where = f" (as the experiment decided them: {saved})"
    else:
        result = evaluate_claims(args.experiment_dir, alpha=args.alpha, num_permutations=args.permutations,
                                 seed=args.seed, detector=detector, compare_with=compare)
        where = "" if as_decided else " (decided again with the options given)"
    if not args.quiet:
        print(result.summary() + ("\n" + where.strip(" ()") if where else ""))
    if args.out:
        result.save(args.out)
        print(f"wrote {args.out}")
    return 0
