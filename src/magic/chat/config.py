"""chat.py's settings, each written once: the generator's loading and decoding (DecodingConfig, as
test_evaluation.py) and the chat's own. Imports nothing heavy, so ``chat.py --help`` is quick."""
from __future__ import annotations

from dataclasses import dataclass

from magic.common.settings import option
from magic.common.validate import non_negative_float, port_int, positive_float, positive_int
from magic.generator.eval_config import DecodingConfig

DEMO_MAX_NEW_TOKENS = 48  # scripts/demo.sh runs step 5 with MAX_NEW_TOKENS=48
HISTORY_LENGTH = 1000  # lines kept in --history_file


@dataclass(kw_only=True)
class ChatConfig(DecodingConfig):
    """Talk to a trained MAGIC model (chat.py)."""
    model_path: str | None = option(None, "generator checkpoint folder (main.py's epoch_<e>_val_ppl_<p>/)",
                                    aliases=("--checkpoint",))
    # the strategy source: one of these three (or --demo's merged LLM)
    llm_path: str | None = option(None, "strategy source: the merged strategy LLM folder")
    base_url: str | None = option(None, "strategy source: an OpenAI-compatible server, e.g. http://localhost:8000/v1 "
                                  "(key: $OPENAI_API_KEY)")
    strategy: str | None = option(None, "strategy source: one fixed strategy for every turn, no LLM")
    demo: bool = option(False, "the best checkpoint and merged LLM of `bash scripts/demo.sh` under --demo_dir")
    demo_dir: str = option("demo_run", "the demo's work folder")
    # the strategy LLM's generation, as step 5's
    model: str | None = option(None, "served model name (--base_url; default: --llm_path, else 'default')")
    template: str = option("default", "strategy LLM prompt template", choices=("default", "chat", "none"))
    max_new_tokens: int | None = option(None, "strategy LLM answer tokens (default: step 5's; with --demo "
                                        f"{DEMO_MAX_NEW_TOKENS}, as the demo)", type=positive_int)
    do_sample: bool = option(False, "sample the strategy LLM's answer")
    top_k: int | None = option(None, "strategy LLM top-k", type=positive_int)
    temperature: float | None = option(None, "strategy LLM temperature", type=non_negative_float)
    dtype: str | None = option(None, "strategy LLM dtype: float32, float16, bfloat16, auto")
    timeout: float = option(30.0, "seconds per request to --base_url", type=positive_float)
    # the chat
    threads: int | None = option(None, "torch CPU threads (default: all cores; 1 with --demo, whose models are "
                                 "too small for more)", type=positive_int)
    situation: str = option("", "the seeker's situation, first item of the generator's context")
    update_memory: bool = option(False, "add each supporter turn to the memory bank, as training does (default: "
                                 "the checkpoint's bank, frozen, as in the evaluation)")
    input: str | None = option(None, "answer the MultiESC dialogue (JSON) of this file, ending with a seeker turn, "
                               "and exit")
    output: str | None = option(None, "with --input: the reply as JSON (default: stdout)")
    history_file: str | None = option(None, f"keep the typed lines in FILE (owner only, last {HISTORY_LENGTH}); "
                                      "default: none kept", metavar="FILE")
    web: bool = option(False, "serve the chat as a Gradio page instead of the terminal")
    host: str = option("127.0.0.1", "web: address to listen on (0.0.0.0 exposes it)")
    port: int = option(7860, "web: port", type=port_int)
    share: bool = option(False, "web: a public gradio.live link")
    auth: str | None = option(None, "web: USER:PASS to open the page; prefer $MAGIC_CHAT_AUTH (ps shows this flag); "
                              "default: $MAGIC_CHAT_AUTH, else none")
