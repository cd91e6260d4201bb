"""Talk to a trained MAGIC model (chat.py): one seeker turn in, strategy + motivation + supporter response out.

Every turn runs the pipeline's own code, so what you see is what the evaluation would have produced:

1. the dialogue so far becomes an ``magic.esconv.dialogues`` sample whose target is the next supporter turn
   (``make_sample``, memory = this chat's earlier supporter turns, as the train/valid enumeration does);
2. strategy + motivation: the step-5 prompt (``prompts.llama_prompt``) answered by the merged strategy LLM
   or an OpenAI-compatible server through step 5's engines (``magic.llm.engines.factory.make_engine``: the
   same template, generation and cache keys), parsed by ``magic.llm.report.answer_to_entry``
   (the step-5 parser: first label named, else Others); or a fixed / forced label;
3. the generator record is the test record of that sample (``dataset_build.sample_record``, see
   ``generator_record``) with the inferred strategy and motivation, as step 5 merges them;
4. the response is decoded by ``evaluation.generate_responses`` (cached beam search, test_evaluation.py's
   DecodingConfig) and cleaned by ``evaluation.clean_response``, as the evaluation scores it.

Seeker text typed by a person is tokenised the MultiESC way first (``convert_hf.tokenize_text``: the
generator and the strategy LLM were trained on ``I ' m sad .``, not ``I'm sad.``).

Shown beside each answer: the generator's auxiliary strategy classifier applied to its own response (pooled
by the memory encoder, exactly the path the auxiliary loss trains) and the fill level of the 8 memory slots.
The bank is frozen, as in the evaluation; ``update_memory=True`` appends each supporter turn of the chat to
it the way training does (per chat session; /reset restores the checkpoint's bank).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field, replace

from magic.common.artifacts import best_checkpoint, latest_best_checkpoint
from magic.common.errors import UserError
from magic.common.validate import check_tokenizer_files
from magic.esconv.dialogues import STRATEGIES, Dialogue, Turn, canonical_strategy, make_sample, parse_dialogue
from magic.generator.eval_config import DecodingConfig
from magic.llm.engines.base import Generation
from magic.llm.engines.factory import make_engine

CHAT_SPLIT = "chat"  # sample ids of a chat: chat-0-<turn>


class ChatSetupError(UserError):
    """A model folder or a flag cannot be used; the message is one line naming it."""


class StrategyError(RuntimeError):
    """The strategy source failed for this turn (e.g. the server is unreachable); the chat goes on."""


def parse_label(label: str) -> str:
    """Canonical strategy label, or ValueError naming the 8 labels (any case, brackets allowed)."""
    try:
        return canonical_strategy(label)
    except KeyError:
        raise ValueError(f"unknown strategy {label.strip()!r}; expected one of {list(STRATEGIES)} "
                         "(any case, brackets allowed)") from None


# --------------------------------------------------------------------------------------------------
# Strategy sources
class LocalStrategyLLM:
    """The merged strategy LLM folder, run as step 5 runs it (the same engine, template, generation, parser)."""

    name = "strategy LLM"

    def __init__(self, path: str, generation: Generation, device: str | None = None, dtype: str | None = None):
        if not os.path.isdir(path):
            raise ChatSetupError(f"{path}: strategy LLM folder not found (expected the merged model written by "
                                 "LLM_inference/export_model.py)")
        if not os.path.exists(os.path.join(path, "config.json")):
            raise ChatSetupError(f"{path}: no config.json; expected the merged strategy LLM folder written by "
                                 "LLM_inference/export_model.py")
        check_tokenizer_files(path, "strategy LLM")  # one line (UserError) naming the folder
        self.engine = make_engine("local", model_path=path, batch_size=1, device=device, dtype=dtype,
                                  generation=generation)
        try:
            self.engine.load()
        except (OSError, ValueError, RuntimeError) as e:
            raise ChatSetupError(f"{path}: cannot load the strategy LLM: {str(e).splitlines()[0]}") from None
        self.path = path

    def answer(self, sample_id: str, prompt: str) -> str:
        return self.engine.answer_one(sample_id, prompt)


class ServerStrategyLLM:
    """An OpenAI-compatible server (vLLM, llama.cpp, Ollama) serving the strategy LLM, asked as step 5 asks it
    (the raw prompt as one user message; the server applies its chat template); one quick retry, so a chat
    turn never hangs on a server that is down."""

    name = "strategy server"

    def __init__(self, base_url: str, model: str, generation: Generation, timeout: float, max_retries: int = 1):
        self.base_url, self.model = base_url, model
        generation = replace(generation, template="default", top_k=None)  # the server applies its own template
        self.engine = make_engine("openai", model_path=model, base_url=base_url, concurrency=1, timeout=timeout,
                                  max_retries=max_retries, generation=generation)

    def check(self) -> str | None:
        """None when the server answers a model listing, else a one-line reason (secrets scrubbed)."""
        return self.engine.check()

    def answer(self, sample_id: str, prompt: str) -> str:
        try:
            return self.engine.answer_one(sample_id, prompt)
        except RuntimeError as e:  # FatalRequestError (bad key, unknown model) or the retried failure
            raise StrategyError(f"--base_url {self.base_url}: {e}") from None


class FixedStrategy:
    """``--strategy LABEL``: every turn uses this label (no LLM, no motivation)."""

    name = "fixed"

    def __init__(self, label: str):
        self.label = parse_label(label)


# --------------------------------------------------------------------------------------------------
# Generator
def find_demo_paths(work: str = "demo_run") -> tuple[str, str]:
    """(best generator checkpoint, merged strategy LLM) of ``bash scripts/demo.sh`` under ``work``.

    The best checkpoint is the ``epoch_<e>_val_ppl_<p>`` folder with the lowest p in the newest run folder
    that holds one (magic.common.artifacts.latest_best_checkpoint; main.py writes one only when the
    validation perplexity improves)."""
    ckpt = latest_best_checkpoint(os.path.join(work, "out_model"))
    if not ckpt:
        raise ChatSetupError(f"{work}/out_model: no generator checkpoint (epoch_*_val_ppl_*); run "
                             "`bash scripts/demo.sh` first")
    llm = os.path.join(work, "llm", "merged")
    if not os.path.isdir(llm):
        raise ChatSetupError(f"{llm}: no merged strategy LLM; run `bash scripts/demo.sh` first")
    return ckpt, llm


def load_generator(path: str, bart_base_dir: str | None = None, device: str | None = "auto"):
    """(model, tokenizer) of a main.py checkpoint through ``checkpoint.load_checkpoint``; one-line errors."""
    from magic.generator.checkpoint import MODEL_FILE, load_checkpoint

    if not os.path.isdir(path):
        raise ChatSetupError(f"{path}: checkpoint folder not found (expected out_model/<run>/epoch_<e>_val_ppl_<p>/ "
                             "written by main.py)")
    if not os.path.exists(os.path.join(path, MODEL_FILE)):
        inner = best_checkpoint(path)
        hint = f"; it is a run folder, pick a checkpoint inside it, e.g. {inner} (its best)" if inner else ""
        raise ChatSetupError(f"{path}: no {MODEL_FILE}; expected a generator checkpoint folder written by "
                             f"main.py{hint}")
    try:
        model, tokenizer, _ = load_checkpoint(path, bart_base_dir=bart_base_dir, device=device)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as e:
        raise ChatSetupError(f"{path}: cannot load the checkpoint: {str(e).splitlines()[0]}") from None
    return model, tokenizer


def generator_record(sample, strategy: str, motivation: str) -> dict:
    """The generator record of a sample as the pipeline builds a test record: the dataset build's record
    (contractions expanded, memory = earlier supporter turns) with the inferred strategy and motivation."""
    from magic.generator.records import sample_record

    rec = sample_record(sample)
    rec["strategy"] = strategy
    rec["motivation"] = motivation
    return rec


@dataclass
class TurnResult:
    strategy: str  # canonical label the generator conditioned on
    source: str  # "strategy LLM", "strategy server", "fixed" or "forced"
    motivation: str  # the LLM's full answer ("" when fixed or forced)
    response: str  # the cleaned response, MultiESC-tokenised
    classifier_probs: dict = field(default_factory=dict)  # label -> probability (8 labels)
    memory_fill: dict = field(default_factory=dict)  # label -> entries in that memory slot
    memory_max: int = 0  # entries per slot (K)
    seconds: float = 0.0
    prompt: str = ""  # the step-5 prompt sent to the strategy LLM

    def as_json(self) -> dict:
        return {"strategy": self.strategy, "strategy_source": self.source, "motivation": self.motivation,
                "response": self.response, "classifier_probs": self.classifier_probs,
                "memory_fill": self.memory_fill, "memory_max": self.memory_max, "seconds": round(self.seconds, 3)}


class ChatEngine:
    """What one chat.py process loads once: the generator, its tokenizer, the strategy source and the
    decoding settings (test_evaluation.py's DecodingConfig). Chats (``ChatSession``) share it."""

    def __init__(self, model, tokenizer, strategy_source, decoding: DecodingConfig, update_memory: bool = False):
        self.model, self.tokenizer, self.source = model, tokenizer, strategy_source
        self.decoding = decoding
        self.update_memory = update_memory
        self.initial_bank = model.memory_state()
        self.lock = threading.RLock()  # one turn at a time on the shared models (the web app serves several tabs)

    def session(self, situation: str = "") -> "ChatSession":
        return ChatSession(self, situation)

    # ----------------------------------------------------------------------------------- one turn
    def infer_strategy(self, sample) -> tuple[str, str, str]:
        """(label, motivation, prompt) from the strategy source for the sample's target turn."""
        from magic.llm.prompts import llama_prompt
        from magic.llm.report import answer_to_entry

        prompt = llama_prompt(sample)
        if isinstance(self.source, FixedStrategy):
            return self.source.label, "", prompt
        answer = self.source.answer(sample.id, prompt)
        entry, _ = answer_to_entry(sample.id, answer)
        return canonical_strategy(entry["strategy"]), entry["motivation"], prompt

    def generate(self, record: dict, bank) -> tuple[str, dict, dict, list]:
        """Decode one record with the evaluation's decoder; returns (response, classifier probabilities,
        memory fill, the bank after the turn)."""
        import torch

        from magic.esconv.dialogues import strategy_id
        from magic.generator.evaluation import clean_response, generate_responses

        model, tok = self.model, self.tokenizer
        with self.lock, torch.no_grad():
            model.load_memory_state(bank)
            raw = generate_responses(model, tok, [record], self.decoding, batch_size=1, progress=False)[0]
            response = clean_response(raw)
            # the auxiliary classifier on the response as the memory encoder pools it (the training path)
            enc = tok([response], truncation=True, max_length=model.max_length_res_memory, return_tensors="pt",
                      padding="max_length" if model.pool == "all" else False)
            pooled = model.encode_memory(enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device))
            probs = torch.softmax(model.strategy_cls(pooled).float(), dim=-1)[0].tolist()
            if self.update_memory:
                model.update_memory(pooled, torch.tensor([strategy_id(record["strategy"])], device=model.device))
            bank = model.memory_state()
        fill = {label: int(t.size(0)) for label, t in zip(STRATEGIES, bank)}
        return response, dict(zip(STRATEGIES, probs)), fill, bank


class ChatSession:
    """One conversation: its turns (MultiESC form), a strategy forced for the next turn, its memory bank."""

    def __init__(self, engine: ChatEngine, situation: str = ""):
        self.engine = engine
        self.situation = situation
        self.turns: list[Turn] = []
        self.motivations: dict[int, str] = {}  # turn index -> motivation of that supporter turn
        self.forced: str | None = None
        self.bank = [t.clone() for t in engine.initial_bank]
        self.last: TurnResult | None = None

    def reset(self) -> None:
        self.turns, self.motivations, self.forced, self.last = [], {}, None, None
        self.bank = [t.clone() for t in self.engine.initial_bank]

    def force(self, label: str) -> str:
        """Force the next turn's strategy; ValueError (one line) for an unknown label."""
        self.forced = parse_label(label)
        return self.forced

    def load(self, obj: dict, where: str = "<input>") -> None:
        """Take a MultiESC dialogue (validated like a data file line) as the conversation so far."""
        d = parse_dialogue(obj, where, 1, 0)
        self.situation, self.turns, self.motivations = d.situation, list(d.turns), {}

    def sample(self, placeholder: str = STRATEGIES[-1]):
        """The esconv sample whose target is the next supporter turn (a placeholder turn, not yet said)."""
        turns = tuple(self.turns) + (Turn("sys", "", placeholder),)
        dialogue = Dialogue(index=0, line=0, situation=self.situation, turns=turns, path="<chat>")
        return make_sample(dialogue, len(self.turns), CHAT_SPLIT, with_memory=True)

    def add_seeker(self, text: str, tokenize: bool = True) -> str:
        from magic.esconv.convert_hf import tokenize_text

        text = tokenize_text(text) if tokenize else " ".join(text.split())
        if not text:
            raise ValueError("empty message")
        if self.turns and self.turns[-1].speaker == "usr":  # two seeker lines in a row: one turn, as MultiESC merges
            self.turns[-1] = Turn("usr", self.turns[-1].text + " " + text, None)
        else:
            self.turns.append(Turn("usr", text, None))
        return text

    def respond(self) -> TurnResult:
        """The supporter's turn for the dialogue so far (which must end with the seeker). StrategyError when
        the strategy source fails: the dialogue is left as it was, so the turn can be retried."""
        if not self.turns or self.turns[-1].speaker != "usr":
            raise ValueError("the dialogue must end with a seeker turn to answer")
        t0 = time.perf_counter()
        sample = self.sample()
        with self.engine.lock:
            if self.forced is not None:
                from magic.llm.prompts import llama_prompt

                label, motivation, prompt, source = self.forced, "", llama_prompt(sample), "forced"
            else:
                label, motivation, prompt = self.engine.infer_strategy(sample)
                source = self.engine.source.name
            record = generator_record(self.sample(label), label, motivation)
            response, probs, fill, bank = self.engine.generate(record, self.bank)
        self.bank = bank
        self.forced = None
        self.motivations[len(self.turns)] = motivation
        self.turns.append(Turn("sys", response, label))
        self.last = TurnResult(label, source, motivation, response, probs, fill,
                               self.engine.model.strategy_memory_max, time.perf_counter() - t0, prompt)
        return self.last

    def say(self, text: str, tokenize: bool = True) -> TurnResult:
        """A seeker message and the supporter's answer; on failure the message is taken back."""
        before = list(self.turns)
        self.add_seeker(text, tokenize)
        try:
            return self.respond()
        except BaseException:
            self.turns = before
            raise

    def memory_fill(self) -> dict:
        return {label: int(t.size(0)) for label, t in zip(STRATEGIES, self.bank)}

    # ----------------------------------------------------------------------------------- output
    def multiesc(self) -> dict:
        """The conversation as one MultiESC dialogue object (a line of data/*.txt)."""
        dialog = []
        for t in self.turns:
            turn = {"speaker": t.speaker, "text": t.text}
            if t.speaker == "sys":
                turn["strategy"] = t.strategy
            dialog.append(turn)
        return {"situation": self.situation, "dialog": dialog}

    def multiesc_line(self) -> str:
        """One line of a MultiESC data file; ESConvFormatError (naming the turn) when the conversation could
        not be read back as data (e.g. an empty generated response)."""
        obj = self.multiesc()
        parse_dialogue(obj, "<chat>", 1, 0)
        return json.dumps(obj, ensure_ascii=False) + "\n"

    def history_lines(self) -> list[str]:
        """The dialogue numbered as the strategy prompt shows it, with each supporter turn's source."""
        out = [f"situation: {self.situation}"] if self.situation else []
        for k, t in enumerate(self.turns):
            if t.speaker == "usr":
                out.append(f"({k + 1}) Seeker: {t.text}")
            else:
                out.append(f"({k + 1}) Supporter: {t.text} [{t.strategy}]")
        return out


def save_line(path: str, line: str) -> str:
    """Add one JSON line to ``path`` (created, or appended to, through a temporary file and a rename, so an
    existing data file is never left half-written; a symlink's target is appended to, an existing file's mode
    kept: magic.common.io_utils.output_target); returns "wrote" or "appended to"."""
    from magic.common.io_utils import atomic_write_text, output_target

    target, _, stream = output_target(path)
    appended = stream is None and os.path.isfile(target) and os.path.getsize(target) > 0
    atomic_write_text(path, line, append=True)
    return "appended to" if appended else "wrote"


# --input holds one dialogue (a few KB), or a JSON-lines file of them whose last line is used (ESConv's test
# split is ~2 MB): anything larger is refused, read no further (`--input /dev/zero` would fill the memory)
MAX_INPUT_BYTES = 64 * 2 ** 20


def load_input_dialogue(path: str) -> dict:
    """A MultiESC dialogue from a file: one JSON object (pretty-printed or one line) or a JSON-lines file
    whose last non-blank line is used. A file that is not UTF-8 is a ChatSetupError naming it and the byte;
    one larger than MAX_INPUT_BYTES (or an endless device) is refused after reading that much."""
    if not os.path.exists(path):
        raise ChatSetupError(f"{path}: input dialogue not found (expected a MultiESC JSON object)")
    if os.path.isdir(path):
        raise ChatSetupError(f"{path}: is a folder; expected a MultiESC dialogue file")
    with open(path, "rb") as f:
        raw = f.read(MAX_INPUT_BYTES + 1)
    if len(raw) > MAX_INPUT_BYTES:
        raise ChatSetupError(f"{path}: more than {MAX_INPUT_BYTES // 2 ** 20} MiB; expected one MultiESC dialogue "
                             "(or a JSON-lines file of them, the last one answered)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ChatSetupError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); expected a MultiESC dialogue "
                             "in UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError as e:
        raise ChatSetupError(f"{path}: not JSON ({e.msg}, line {len(lines)}); expected a MultiESC dialogue "
                             '{"situation": ..., "dialog": [{"speaker": "usr", "text": ...}, ...]}') from None


def typed_text(line: str | bytes) -> str:
    """One line the seeker typed, as text. Bytes are decoded as UTF-8; a string read under a UTF-8 locale with
    Python's surrogateescape (stdin in the C.UTF-8 or POSIX locale) carries each undecodable byte as a lone
    surrogate, which no tokenizer takes. Either way a line that is not UTF-8 is a ValueError naming the first
    bad byte (its offset in the line), so the chat can say so in one line and go on."""
    if isinstance(line, str):
        try:
            line.encode("utf-8")
            return line
        except UnicodeEncodeError:
            try:
                line = line.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as e:  # a surrogate that is no escaped byte: say where it is
                raise ValueError(f"not UTF-8 text (character {e.start}: {e.reason})") from None
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start}: {e.reason})") from None


def read_typed_line(stream, prompt: str = "", interactive: bool = False) -> str:
    """The next line the seeker typed, without its line break: from a terminal through ``input(prompt)``
    (readline line editing), from a pipe or file as bytes (so that a line that is not UTF-8 spoils only itself,
    not the block of input read with it). EOFError at the end; ValueError (typed_text) for a line that is not
    UTF-8, which is consumed."""
    if interactive:
        try:
            line = input(prompt)
        except UnicodeDecodeError as e:  # a strict decoder of the terminal's line
            raise ValueError(f"not UTF-8 text (byte {e.start}: {e.reason})") from None
        return typed_text(line)
    raw = stream.buffer.readline() if hasattr(stream, "buffer") else stream.readline()
    if not raw:
        raise EOFError
    nl = b"\n" if isinstance(raw, bytes) else "\n"
    cr = b"\r" if isinstance(raw, bytes) else "\r"
    return typed_text(raw.rstrip(nl).rstrip(cr))


def format_turn(res: TurnResult) -> list[str]:
    """Terminal lines of one supporter turn."""
    lines = [f"strategy:   {res.strategy}  ({res.source})"]
    if res.motivation:
        lines.append(f"motivation: {' '.join(res.motivation.split())}")
    lines.append(f"supporter:  {res.response}")
    return lines

