"""The results study: the paper's claims tested on real ESConv, one command (docs/RESULTS.md).

    python scripts/reproduce.py --profile cpu            # the plan, then every cell not yet done, then the report
    python scripts/reproduce.py --profile cpu --plan     # the plan only (cells, done, estimated time)
    python scripts/reproduce.py --profile cpu --report   # docs/RESULTS.md from the result files only
    python scripts/reproduce.py --profile smoke          # minutes: tiny models and subsets (CI)
    python scripts/reproduce.py --profile paper          # the paper on one GPU (README, "The paper on one GPU")

Profiles (src/magic/study/profiles.py): smoke, cpu (the 2-core project machine, about 3 hours), gpu-small
(one GPU, the full data), paper (Llama-2-7b and bart-base from local folders: --llm_path, --bart_path;
default models/Llama-2-7b-hf and models/bart-base). Without --profile: this help and each profile's size.
Every cell (one training or one evaluation) is cached by its settings: a rerun skips what is done, an
interrupted cell restarts cleanly (a generator training resumes), and the study can be completed over several
sessions. Result files go to results/<profile>/ (numbers and labels keyed by sample id, never text);
models and decoded text stay in --work (default study_run/<profile>/, not committed). --commit commits each
result file as its cell finishes.

Reads the data folder that `python data/fetch_data.py` builds ($MAGIC_DATA_DIR, else data/esconv, else
../shared/data/esconv; layout: docs/STEPS.md). Exit codes: 0 done; 1 a cell failed (its log is named); 2 bad
flags, or the data or a model folder missing (one line naming it and the command that fetches it); 130
interrupted (rerun the same command to continue).
"""
import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace

from magic.common.errors import UserError, run_main
from magic.common.settings import add_options, from_namespace, option
from magic.common.validate import positive_int
from magic.study.data import FETCH_COMMAND, ROOT, StudyError, data_dir, missing_data, require_data
from magic.study.profiles import PROFILES, get_profile

# the paper profile's models: flag -> (default folder, hub id, what to know before fetching it)
PAPER_MODELS = {"llm_path": ("models/Llama-2-7b-hf", "meta-llama/Llama-2-7b-hf",
                             " (gated: accept its licence on the hub and `hf auth login` first)"),
                "bart_path": ("models/bart-base", "facebook/bart-base", "")}


@dataclass
class ReproduceConfig:
    """The study's flags (the study modules import torch: they load after parsing, so --help answers at once)."""
    profile: str | None = option(None, "the sizes of the study (none: print this help and the sizes)",
                                 choices=tuple(PROFILES))
    plan: bool = option(False, "print the plan and stop")
    report: bool = option(False, "only write the report from the result files")
    only: list[str] | None = option(None, "run only these cells (and what they need)", nargs="+", metavar="CELL")
    work: str | None = option(None, "work folder (default: study_run/<profile>)")
    results: str | None = option(None, "result files (default: results/<profile>)")
    output: str | None = option(None, "the report (default: docs/RESULTS.md; smoke: <results>/RESULTS.md)")
    commit: bool = option(False, "git-commit each result file as its cell finishes")
    jobs: int | None = option(None, "cells run at a time, each with cores/jobs threads (default: the profile's)",
                              type=positive_int)
    llm_path: str | None = option(None, f"paper profile: the Llama-2-7b folder (default {PAPER_MODELS['llm_path'][0]})")
    bart_path: str | None = option(None, f"paper profile: the bart-base folder (default {PAPER_MODELS['bart_path'][0]})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, ReproduceConfig)
    return p


def preload() -> None:
    """Import here, once, what cells use in process: lazy imports (transformers, sklearn) are not safe in
    two threads at once."""
    import sklearn.metrics  # noqa: F401
    from transformers import BartConfig, BartModel, BartTokenizer  # noqa: F401

    import magic.generator.checkpoint  # noqa: F401
    import magic.generator.data  # noqa: F401
    import magic.generator.evaluation  # noqa: F401
    import magic.metric.protocol  # noqa: F401
    import magic.metric.significance  # noqa: F401


def paper_models(args) -> dict:
    """The paper profile's two model folders (flags, else the defaults under models/); a missing one is a
    UserError naming the command that fetches it."""
    paths = {}
    for flag, (default, hub_id, note) in PAPER_MODELS.items():
        path = getattr(args, flag) or os.path.join(ROOT, default)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UserError(f"--{flag} {path}: no model folder (no config.json); fetch it with "
                            f"`hf download {hub_id} --local-dir {path}`{note}")
        paths[flag] = path
    return paths


def print_sizes(parser) -> None:
    """No profile chosen: the help, then what each profile would run (cells, hours, the hardware assumed)."""
    from magic.study.plan import ESTIMATE_BASIS, build_study

    parser.print_help()
    print("\nprofiles (cells, estimated hours, what the estimates assume):")
    for name, profile in PROFILES.items():
        study = build_study(profile, os.path.join(ROOT, "study_run", name), os.path.join(ROOT, "results", name),
                            log=lambda m: None)
        hours = sum(c.estimate_s for c in study.cells.values()) / 3600
        print(f"  {name:<10} {len(study.cells):3d} cells  ~{hours:5.2f} h of cells   {ESTIMATE_BASIS[name]}")
    print("run one: bash scripts/reproduce.sh PROFILE (add --plan to list its cells first)")


def main(argv=None) -> int:
    parser = build_parser()
    args = from_namespace(ReproduceConfig, parser.parse_args(argv))
    from magic.study.plan import ESTIMATE_BASIS, build_study
    from magic.study.report import write_report

    if args.profile is None and not args.report:
        print_sizes(parser)
        return 0
    profile = get_profile(args.profile or "cpu")  # --report alone: the committed cpu study
    results = args.results or os.path.join(ROOT, "results", profile.name)
    output = args.output or (os.path.join(results, "RESULTS.md") if profile.name == "smoke"
                             else os.path.join(ROOT, "docs", "RESULTS.md"))
    if args.report:
        from magic.study.plan import load_data_settings

        have_data = os.path.exists(os.path.join(data_dir(), "magic", "test.txt"))
        data = None if have_data or not os.path.isdir(results) else load_data_settings(results)
        study = build_study(profile, args.work or os.path.join(ROOT, "study_run", profile.name), results, data=data)
        print(f"wrote {write_report(study, output, profile.name)}")
        return 0
    extra = {k: v for k, v in (("llm_path", args.llm_path), ("bart_path", args.bart_path)) if v}
    if not args.plan:  # an explicit profile without its data or models: exit 2, one line, the fetch command
        require_data()
        extra = paper_models(args) if profile.name == "paper" else extra
    if extra:
        profile = replace(profile, extra={**profile.extra, **extra})
    jobs = args.jobs or profile.jobs
    if jobs > 1:  # each cell's processes get its share of the cores (2 x 1 thread beats 1 x 2 on 2 cores)
        threads = str(max(1, (os.cpu_count() or 2) // jobs))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = threads
        preload()
    work = args.work or os.path.join(ROOT, "study_run", profile.name)
    study = build_study(profile, work, results, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"study, profile {profile.name}: work {work}, results {results}")
    print(f"estimates assume {ESTIMATE_BASIS[profile.name]}")
    print("\n".join(study.plan_lines(args.only)) + (f", {jobs} at a time" if jobs > 1 else ""))
    if args.plan:
        if missing_data():
            print(f"data: missing in {data_dir()}: {', '.join(missing_data())} (fetch: {FETCH_COMMAND})")
        return 0
    if args.commit:
        check_git(results)

    def commit(cell, record):  # a failed commit (another git command holds the index) costs a warning only
        path = study.result_path(cell)
        for attempt in range(5):
            add = subprocess.run(["git", "add", path], cwd=ROOT, capture_output=True)
            done = add.returncode == 0 and subprocess.run(
                ["git", "commit", "-q", "-m", f"study {profile.name}: {cell.name} ({record['wall_s']:.0f} s)",
                 "--", path], cwd=ROOT, capture_output=True).returncode == 0
            if done:
                return
            time.sleep(2 + 3 * attempt)
        print(f"reproduce.py: warning: could not commit {path}; commit it by hand", file=sys.stderr)

    study.run(args.only, on_done=commit if args.commit else None, jobs=jobs)
    print(f"wrote {write_report(study, output, profile.name)}")
    return 0


def check_git(results: str) -> None:
    """--commit: the result folder must be inside a git work tree (checked once, before the first cell)."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True)
    root = os.path.realpath(top.stdout.strip()) if top.returncode == 0 else None
    if root is None or os.path.commonpath([root, os.path.realpath(results)]) != root:
        why = f"{results} is outside the git repository {root}" if root else f"{ROOT} is not in a git repository"
        raise UserError(f"--commit: {why}; nothing could be committed: drop --commit or run from a clone")


if __name__ == "__main__":
    sys.exit(run_main("reproduce.py", main, codes={StudyError: 1}))  # a failed cell: exit 1, its log named
