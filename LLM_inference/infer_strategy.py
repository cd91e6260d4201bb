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
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
from magic.common.artifacts import SPLITS, prompt_file
from magic.common.errors import EXIT_BAD_INPUT, EXIT_USER_ERROR, UserError, run_main
from magic.common.io_utils import plain_warnings
from magic.llm.inference import InferenceConfig, run_strategy_inference
from magic.llm.shards import parse_shard
from magic.common.validate import ApiKeyError, check_api_key, parse_split_list, positive_float, positive_int

RELEASED = {"model_path": "fine_tuned_llama2/", "prompt_path": prompt_file("train"),
            "prompt_path_valid": prompt_file("valid"), "prompt_path_test": prompt_file("test"), "output_dir": "."}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=None, help="merged model folder (default LLM_inference/fine_tuned_llama2/)")
    p.add_argument("--prompt_path", default=None, help="train prompts (default LLM_inference/prompts_4_LLaMA.json)")
    p.add_argument("--prompt_path_valid", default=None)
    p.add_argument("--prompt_path_test", default=None)
    p.add_argument("--output_dir", default=None, help="default LLM_inference/")
    p.add_argument("--splits", default=",".join(SPLITS), help=f"comma-separated subset of {','.join(SPLITS)}")
    p.add_argument("--cache_file", default=None,
                   help="answer cache (default <output_dir>/strategy_inference_cache.jsonl)")
    p.add_argument("--template", default="default", choices=["default", "chat", "none"],
                   help="prompt template, as in fine-tuning (local backend)")
    p.add_argument("--batch_size", type=positive_int, default=16)
    p.add_argument("--max_samples", type=positive_int, default=None, help="first N prompts of each split")
    p.add_argument("--max_new_tokens", type=positive_int, default=128)
    p.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--top_k", type=positive_int, default=None, help="with --do_sample (released: 10)")
    p.add_argument("--temperature", type=positive_float, default=None, help="with --do_sample")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 | auto (default: as transformers loads it, which in transformers 5 is the "
                        "checkpoint's dtype; scripts/5_infer_strategy.sh passes auto on a GPU, float32 on CPU)")
    p.add_argument("--no_prefix_sharing", action="store_true",
                   help="local backend: one padded generate call per batch, instead of prefilling each prompt "
                        "only where it differs from an earlier prompt of its batch (same answers up to float "
                        "rounding; several times slower on CPU)")
    p.add_argument("--batch_order", default="auto", choices=["auto", "file", "length"],
                   help="local backend: batch consecutive prompts (file: a dialogue's prompts share the most "
                        "prefix) or prompts of similar length (length: least padding); auto = file with "
                        "prefix sharing, length without")
    p.add_argument("--backend", default="local", choices=["local", "openai", "vllm"],
                   help="local: transformers; openai: any OpenAI-compatible server; vllm: vllm.LLM offline "
                        "(optional package, CUDA)")
    p.add_argument("--openai_endpoint", default="chat", choices=["chat", "completions"],
                   help="openai backend: chat = /v1/chat/completions with the raw instruction (the server's chat "
                        "template); completions = /v1/completions with the prompt wrapped in --template here, "
                        "i.e. exactly the fine-tuning format")
    p.add_argument("--tensor_parallel_size", type=int, default=1, help="vllm backend: GPUs per model")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="answer only shard K of N (0-based) into <cache_file>.shard<K>of<N>.jsonl; the last "
                        "shard to finish writes the outputs")
    p.add_argument("--merge_shards", type=int, default=None, metavar="N",
                   help="write the outputs from the N shard caches (same other arguments as the shards; no model)")
    p.add_argument("--base_url", default=None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    p.add_argument("--model", default=None, help="served model name (openai backend; default --model_path)")
    p.add_argument("--concurrency", type=positive_int, default=8, help="parallel requests (openai backend)")
    p.add_argument("--train_file", default=None, help="gold dialogues for the report (train split)")
    p.add_argument("--valid_file", default=None)
    p.add_argument("--test_file", default=None)
    p.add_argument("--test_mode", default="last", choices=["last", "all"], help="test enumeration (gold)")
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
    except UserError as e:
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
    cfg = InferenceConfig(
        prompt_paths={s: paths[s] for s in splits}, output_dir=args.output_dir, model_path=args.model_path,
        cache_file=args.cache_file or os.path.join(args.output_dir, "strategy_inference_cache.jsonl"),
        backend=args.backend, template=args.template, batch_size=args.batch_size, max_samples=args.max_samples,
        max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, top_k=args.top_k,
        temperature=args.temperature, device=args.device, dtype=args.dtype, base_url=args.base_url,
        model=args.model, concurrency=args.concurrency,
        gold_files={s: f for s, f in golds.items() if f}, test_mode=args.test_mode,
        share_prefix=not args.no_prefix_sharing,
        sort_by_length={"auto": None, "file": False, "length": True}[args.batch_order],
        openai_endpoint=args.openai_endpoint, tensor_parallel_size=args.tensor_parallel_size,
        merge_shards=args.merge_shards,
    )
    try:
        cfg.shard = parse_shard(args.shard) if args.shard else None
    except ValueError as e:
        parser.error(str(e))
    if cfg.backend in ("local", "vllm") and not cfg.merge_shards and not os.path.isdir(cfg.model_path):
        raise UserError(f"{cfg.model_path}: model folder not found (export_model.py --export_dir)")
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
