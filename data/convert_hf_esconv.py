"""Step 0 (alternative): convert ESConv from the HF ``thu-coai/esconv`` form to the MultiESC form MAGIC reads.

    python data/convert_hf_esconv.py --input_dir HF_DIR --output_dir data/          # all three splits
    python data/convert_hf_esconv.py --input HF_DIR --split test --output data/test.txt
    python data/convert_hf_esconv.py --input valid.json --output data/valid.txt
    python data/convert_hf_esconv.py --from_hub --output_dir data/                  # needs internet

The rules (turn merging, tokenisation, label mapping) are in src/magic/esconv/convert_hf.py. "Greeting" does not
exist in ESConv; it is given by a keyword heuristic (--greeting). See docs/FIDELITY.md.
Exit codes: 0 done, 2 bad flag or input, or the hub unavailable (one ``convert_hf_esconv.py: error: ...``
line naming the file), 130 interrupted.
"""
import argparse
import os
import sys
from dataclasses import dataclass

from magic.common.artifacts import SPLITS
from magic.common.errors import UserError, run_main
from magic.common.settings import add_options, from_namespace, option
from magic.esconv.convert_hf import (DEFAULT_GREETING, GREETING_MODES, HubUnavailableError, convert_splits,
                                     find_split_file, hub_lines)
from magic.esconv.dialogues import load_samples


SOURCES = ("input", "input_dir", "from_hub")  # exactly one is given


@dataclass
class ConvertConfig:
    input: str | None = option(None, "an HF-form JSON-lines file, or a folder holding {train,valid,test}.json (then "
                               "--split picks one; without it all three are converted into --output_dir)")
    input_dir: str | None = option(None, "folder with the HF-form train/valid(ation)/test .json/.jsonl/.txt files")
    from_hub: bool = option(False, "load thu-coai/esconv with datasets.load_dataset (needs internet)")
    split: str | None = option(None, "convert only this split (with a folder or --from_hub)", choices=SPLITS)
    output: str | None = option(None, "output file (with a single input file or a single --split)")
    output_dir: str = option("data", "output folder for <split>.txt")
    greeting: str = option(DEFAULT_GREETING, "HEURISTIC: ESConv has no 'Greeting' label. 'all': an 'Others' "
                           "supporter turn whose text looks like a greeting, thanks or good-bye becomes 'Greeting' "
                           "(closest to MultiESC: 97.0% label agreement); 'opening': only the first supporter turn "
                           "of a dialogue (92.0%); 'none': keep 'Others' (90.1%)", choices=GREETING_MODES)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Step 0 (alternative): HF thu-coai/esconv JSON lines -> MultiESC JSON lines "
        "(data/{train,valid,test}.txt), validated before it is written (atomically). The rules: "
        "src/magic/esconv/convert_hf.py.",
        epilog="Measured on the real valid/test split: turn counts 390/390 dialogues, exact turn text 92.9%, "
        "supporter labels 97.0% (--greeting all).")
    add_options(p.add_mutually_exclusive_group(required=True), ConvertConfig,
                skip=[f for f in ConvertConfig.__dataclass_fields__ if f not in SOURCES])
    add_options(p, ConvertConfig, skip=SOURCES)
    return p


def plan(args: ConvertConfig, parser: argparse.ArgumentParser) -> dict[str, tuple[str, str]]:
    """split -> (input file or 'hub', output file)."""
    out_dir = args.output_dir
    if args.output and (args.input_dir or args.from_hub or os.path.isdir(args.input or "")) and not args.split:
        parser.error("--output needs a single split; use --split, or --output_dir for all three")

    def out_for(split: str) -> str:
        return args.output or os.path.join(out_dir, f"{split}.txt")

    splits = (args.split,) if args.split else SPLITS
    if args.from_hub:
        return {s: ("hub", out_for(s)) for s in splits}
    folder = args.input_dir or (args.input if os.path.isdir(args.input) else None)
    if folder:
        return {s: (find_split_file(folder, s), out_for(s)) for s in splits}
    if not os.path.exists(args.input):
        raise FileNotFoundError(f"{args.input}: no such file (expected HF thu-coai/esconv JSON lines)")
    if not args.output and not args.split:
        parser.error("with a single --input file, give --output (or --split to write <output_dir>/<split>.txt)")
    return {args.split or "input": (args.input, out_for(args.split or "input"))}


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = from_namespace(ConvertConfig, parser.parse_args(argv))
    jobs = plan(args, parser)
    sources = {}
    for split, (inp, _) in jobs.items():
        if inp == "hub":
            sources[split] = (f"hub:thu-coai/esconv[{split}]", hub_lines(split))
            continue
        try:
            with open(inp, encoding="utf-8") as f:
                sources[split] = (inp, f.readlines())
        except UnicodeDecodeError as e:
            raise UserError(f"{inp}: not UTF-8 text ({e.reason} at byte {e.start}); expected HF-form JSON "
                            "lines") from None
    outputs = {s: out for s, (_, out) in jobs.items()}
    stats = convert_splits(sources, outputs, args.greeting)
    for split, st in stats.items():
        out = outputs[split]
        # a single file is enumerated like the split its output is named after (train otherwise)
        stem = os.path.splitext(os.path.basename(out))[0]
        enum_split = split if split in SPLITS else (stem if stem in SPLITS else "train")
        n = len(load_samples(out, enum_split))
        print(f"{split}: {st.dialogues} dialogues, {st.turns_in} HF turns -> {st.turns_out} turns "
              f"({st.duplicates_dropped} repeated turns dropped), {n} {enum_split} samples -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """run() for the command line: bad input, and the hub unavailable, are one line and exit code 2
    (src/magic/common/errors.py)."""
    return run_main("convert_hf_esconv.py", lambda: run(argv), extra=(HubUnavailableError,))


if __name__ == "__main__":
    sys.exit(main())
