r"""Step 5: infer strategy + motivation for every train/valid/test prompt with the fine-tuned LLM.

    python LLM_inference/infer_strategy.py                          # all three splits, defaults below
    python LLM_inference/infer_strategy.py --splits valid,test --max_samples 20 \
        --valid_file data/valid.txt --test_file data/test.txt      # + accuracy / F1 report

Default paths (--model_path fine_tuned_llama2/, prompts_4_LLaMA*.json, --output_dir) are the released
ones, taken relative to THIS folder (LLM_inference/), so the command works from the repository root and
from LLM_inference/ alike; paths you give are relative to the current directory.

Prompts are wrapped in the training template (`default`: "Human: {prompt}\\nAssistant: ") and generated
greedily in left-padded batches (--do_sample --top_k 10 restores the released sampling). Within a batch
each prompt runs only the tokens it does not share with an earlier prompt (the instruction, and within a
dialogue the clip so far), so batches follow the file order (--no_prefix_sharing, --batch_order).
Answers are cached in --cache_file as they come: rerunning a killed run continues where it stopped. Each
output file strategy_with_motivation{,_valid,_test}.json = [{"id", "strategy": "[question]", "motivation"}] is
written atomically when its split is complete. --backend openai sends the raw prompts to an
OpenAI-compatible server (e.g. vLLM serving the merged model) that applies its own chat template, or with
--openai_endpoint completions the prompts wrapped in --template to /v1/completions (the training format,
no chat template needed); --backend vllm runs vllm.LLM in process (prefix caching, --tensor_parallel_size).
Many GPUs or machines: run `--shard K/N` for K = 0..N-1 (one process each, same other arguments); the
last to finish, or a later `--merge_shards N`, writes the files, identical to one unsharded run.
Exit codes: 0 done; 1 bad input or an incomplete run (one ``infer_strategy.py: error: ...`` line); 2 bad
flag, or (--backend openai) an OPENAI_API_KEY that cannot be sent (a line break in it: refused before the first
request, the key not shown); 130 interrupted (the cache keeps the answers).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
from magic.common.artifacts import SPLITS, prompt_file
from magic.common.errors import EXIT_BAD_INPUT, EXIT_USER_ERROR, UserError, run_main
from magic.common.io_utils import plain_warnings
from magic.common.settings import from_namespace, step_parser
from magic.common.validate import ApiKeyError, check_api_key, parse_split_list
from magic.llm.config import InferenceConfig, InferenceFlags
from magic.llm.shards import parse_shard

RELEASED = {"model_path": "fine_tuned_llama2/", "prompt_path": prompt_file("train"),
            "prompt_path_valid": prompt_file("valid"), "prompt_path_test": prompt_file("test"), "output_dir": "."}


def parse_args(argv=None):
    """(the parsed flags, released paths filled in relative to this folder; the parser)."""
    p = step_parser(__doc__.splitlines()[0], InferenceFlags, InferenceConfig)
    args = p.parse_args(argv)
    for name, released in RELEASED.items():
        if getattr(args, name) is None:
            setattr(args, name, os.path.join(HERE, released))
    return args, p


def run(argv=None) -> int:
    args, parser = parse_args(argv)
    plain_warnings()
    try:
        chosen = parse_split_list(args.splits, "--splits")
        shard = parse_shard(args.shard) if args.shard else None
    except (UserError, ValueError) as e:
        parser.error(str(e))
    if not chosen:
        parser.error(f"--splits: no split given; expected a subset of {','.join(SPLITS)}")
    splits = [s for s in SPLITS if s in chosen]
    if args.backend == "openai" and args.top_k is not None:
        print("warning: --top_k is not sent to OpenAI-compatible servers", file=sys.stderr)
    if args.backend == "openai":
        check_api_key(os.environ.get("OPENAI_API_KEY"))  # before anything is read or sent; exit 2, key not shown
    paths = {"train": args.prompt_path, "valid": args.prompt_path_valid, "test": args.prompt_path_test}
    golds = {"train": args.train_file, "valid": args.valid_file, "test": args.test_file}
    cfg = from_namespace(InferenceConfig, args, prompt_paths={s: paths[s] for s in splits},
                         gold_files={s: f for s, f in golds.items() if f}, shard=shard,
                         share_prefix=not args.no_prefix_sharing,
                         sort_by_length={"auto": None, "file": False, "length": True}[args.batch_order])
    if cfg.backend in ("local", "vllm") and not cfg.merge_shards and not os.path.isdir(cfg.model_path):
        raise UserError(f"{cfg.model_path}: model folder not found (export_model.py --export_dir)")
    from magic.llm.inference import run_strategy_inference  # the engines: after the flags are read

    run_strategy_inference(cfg)
    return 0


def main(argv=None) -> int:
    """run() for the command line: bad input, and RuntimeError (an incomplete run: InferenceIncomplete; a
    server or device that fails), are one line and exit code 1; an OPENAI_API_KEY that cannot be sent is a
    bad setting like a bad flag: one line, exit code 2 (src/magic/common/errors.py)."""
    return run_main("infer_strategy.py", lambda: run(argv), code=EXIT_BAD_INPUT, extra=(RuntimeError,),
                    codes={ApiKeyError: EXIT_USER_ERROR})


if __name__ == "__main__":
    sys.exit(main())
