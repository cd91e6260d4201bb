"""src/magic/llm/engines/factory.py and the seam around it: the factory alone turns a backend name into an engine,
the engines do not know each other, and the local-model helpers live in magic.llm.local_model only."""
import ast
import os

import pytest

from magic.common.validate import ApiKeyError
from magic.llm.engines.base import Generation
from magic.llm.engines.factory import BACKENDS, make_engine

LLM = os.path.join(os.path.dirname(__file__), "..", "..", "src", "magic", "llm")
ENGINES = {"hf", "openai", "vllm"}


def _imports(rel):
    tree = ast.parse(open(os.path.join(LLM, rel), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, set()


def test_base_and_engines_do_not_import_each_other():
    for rel in ("engines/base.py", "engines/hf.py", "engines/openai.py", "engines/vllm.py"):
        me = os.path.splitext(os.path.basename(rel))[0]
        others = {f"magic.llm.engines.{e}" for e in ENGINES - {me}} | {"magic.llm.engines.factory"}
        bad = [m for m, _ in _imports(rel) if m in others]
        assert not bad, f"{rel} imports {bad}"


def test_steps_and_chat_pick_engines_through_the_factory():
    for rel in ("motivations.py", "inference.py", os.path.join("..", "chat", "engine.py")):
        modules = {m for m, _ in _imports(rel)}
        assert "magic.llm.engines.factory" in modules, rel
        assert not modules & {f"magic.llm.engines.{e}" for e in ("hf", "vllm")}, rel


def test_local_model_helpers_have_one_home():
    """Training, export and the local engine take loading, dtype, tokenizer and encoding rule from local_model."""
    helpers = {"load_causal_lm", "prepare_tokenizer", "resolve_dtype", "tokenize_prompts", "EncodingRule"}
    for rel in ("sft.py", "engines/hf.py", "engines/vllm.py", "engines/openai.py"):
        for module, names in _imports(rel):
            if names & helpers:
                assert module == "magic.llm.local_model", f"{rel} takes {names & helpers} from {module}"
    defined = {n.name for n in ast.parse(open(os.path.join(LLM, "engines", "hf.py")).read()).body
               if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not defined & helpers


def test_make_engine_names_its_backends_and_refuses_others(monkeypatch):
    assert BACKENDS == ("local", "openai", "vllm")
    with pytest.raises(ValueError, match="unknown backend 'tgi'; expected one of local, openai, vllm"):
        make_engine("tgi", model_path="m")
    local = make_engine("local", model_path="nowhere", generation=Generation(max_new_tokens=4), batch_size=2)
    assert local.name == "local" and local.batch_size == 2 and local.model_and_tokenizer is None  # nothing loaded
    server = make_engine("openai", model_path="m", base_url="http://127.0.0.1:9/v1", api_key="EMPTY", concurrency=2)
    assert server.name == "openai" and server.model == "m"
    with pytest.raises(ApiKeyError):  # refused when the engine is made, before any request
        make_engine("openai", model_path="m", base_url="http://127.0.0.1:9/v1", api_key="sk-abc\ndef", concurrency=1)
