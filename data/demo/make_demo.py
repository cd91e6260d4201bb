"""Writes data/demo/{train,valid,test}.txt: a small synthetic emotional-support world with learnable rules.

No ESConv text is used: every sentence below was written for this project. The rules (data/demo/README.md
states them for a reader to check) are:

* the supporter's strategy follows from a visible cue in the seeker's last turn (CUES: a greeting, a vague
  problem, a concrete detail, a named feeling, self-blame, a request for advice, a question about the
  supporter's own experience, thanks, a goodbye); two cues leave a choice between two strategies
  (CUE_STRATEGIES), so the generator has to listen to the strategy it is given;
* each strategy has its own family of response templates (RESPONSES) that reuse details of the context:
  the person named (``{name}``), the relation (``{rel}``), the problem (``{problem}``, ``{event}``) and the
  feeling (``{feeling}``).

Dialogues are drawn with ``random.Random(SEED)``, so the files are the same on every run; the text is
tokenised the MultiESC way (``magic.esconv.convert_hf.tokenize_text``: ``I ' m``, spaces around punctuation).

    python data/demo/make_demo.py            # rewrites the three files
    python data/demo/make_demo.py --check    # exit 1 if the committed files differ from a rebuild

Exit codes: 0 written (or --check: up to date); 1 --check found stale files, or a file cannot be read or
written (one ``make_demo.py: error: ...`` line naming it); 2 bad flag.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys

from magic.esconv.convert_hf import tokenize_text
from magic.esconv.dialogues import parse_dialogue
from magic.common.errors import UserError, run_main
from magic.common.io_utils import atomic_write_text

SEED = 12
SIZES = {"train": 40, "valid": 10, "test": 16}  # dialogues per split

Q, RP, RF, SD = "Question", "Restatement or Paraphrasing", "Reflection of feelings", "Self-disclosure"
AR, PS, GR, OT = "Affirmation and Reassurance", "Providing Suggestions or Information", "Greeting", "Others"

# The problems of the world: (problem_type, emotion_type, relation, problem phrase, event phrase, advice).
# {name} is drawn from NAMES; the event is what the seeker reports as the concrete detail.
TOPICS = [
    ("job crisis", "anger", "boss", "my job",
     "gave my project to a new colleague",
     "ask {name} for a short meeting about your work"),
    ("breakup with partner", "sadness", "partner", "my relationship",
     "moved out last weekend",
     "write {name} a letter that you do not send"),
    ("problems with friends", "sadness", "friend", "a friendship",
     "stopped answering my messages",
     "send {name} one calm message and wait a few days"),
    ("conflict with parents", "anger", "mother", "my family",
     "shouted at me about my grades",
     "talk to {name} on a quiet evening"),
    ("academic pressure", "anxiety", "teacher", "my studies",
     "said my essay was not good enough",
     "ask {name} what exactly you can improve"),
    ("financial problems", "anxiety", "landlord", "my rent",
     "raised the rent again",
     "ask {name} for a payment plan in writing"),
    ("grief", "sadness", "grandfather", "a loss",
     "passed away last month",
     "keep a small notebook of memories of {name}"),
    ("ongoing depression", "depression", "brother", "feeling low",
     "said I should just cheer up",
     "tell {name} what would really help you"),
    ("sleep problems", "anxiety", "roommate", "my sleep",
     "plays loud music every night",
     "agree on quiet hours with {name}"),
    ("job crisis", "fear", "manager", "my workload",
     "gave me three deadlines for the same day",
     "show {name} a list of your tasks and ask which comes first"),
]
NAMES = ["Anna", "Ben", "Carla", "David", "Elena", "Frank", "Grace", "Hugo", "Irene", "Jonas", "Lena", "Marco",
         "Nora", "Oscar", "Paula", "Rosa", "Sami", "Tara"]
FEELINGS = ["lonely", "angry", "scared", "hopeless", "frustrated", "nervous", "sad", "ashamed"]

# Seeker cues: what the seeker's turn shows. Several phrasings each, so a model has to learn the cue, not a string.
CUES = {
    "hello": ["Hi , is anyone there ?", "Hello . I need someone to talk to .", "Hi . Can I talk to you for a moment ?"],
    "vague": ["I have a problem with {problem} .", "Things are not going well with {problem} .",
              "I keep thinking about {problem} ."],
    "detail": ["My {rel} {name} {event} .", "It is about {name} , my {rel} . {name} {event} .",
               "Well , my {rel} {name} {event} and I don't know why ."],
    "feeling": ["I feel so {feeling} .", "Honestly I just feel {feeling} all the time .",
                "I'm {feeling} and I can't stop thinking about it ."],
    "blame": ["Maybe it is all my fault .", "I think I'm the problem here .", "I feel like I failed again ."],
    "advice": ["What should I do ?", "Do you have any idea what I can do ?", "How can I fix this ?"],
    "experience": ["Has this ever happened to you ?", "Did you ever go through something like this ?",
                   "Have you been in a situation like mine ?"],
    "thanks": ["Thank you , that helps a bit .", "Thanks for listening to me .", "Okay , thank you ."],
    "bye": ["I have to go now . Bye !", "I think I will sleep now . Good night !", "I need to leave now , bye ."],
}
# cue -> (strategy, probability): the two ambiguous cues are "detail" and "feeling"
CUE_STRATEGIES = {
    "hello": [(GR, 1.0)],
    "vague": [(Q, 1.0)],
    "detail": [(RP, 0.6), (Q, 0.4)],
    "feeling": [(RF, 0.7), (AR, 0.3)],
    "blame": [(AR, 1.0)],
    "advice": [(PS, 1.0)],
    "experience": [(SD, 1.0)],
    "thanks": [(OT, 1.0)],
    "bye": [(GR, 1.0)],
}
# Each strategy's family of responses; the cue decides the variant where a strategy follows two cues.
RESPONSES = {
    (GR, "hello"): ["Hello , I am glad you came . I am here to listen .", "Hi , welcome . I am here for you ."],
    (GR, "bye"): ["Goodbye , take good care of yourself and of things with {name} .",
                  "Bye , I hope {problem_you} gets easier soon ."],
    (GR, "open"): ["Hello , I am here to listen . How are you today ?"],
    (Q, "vague"): ["What happened with {problem_you} ?", "Can you tell me more about {problem_you} ?"],
    (Q, "detail"): ["How long has {name} been like this ?", "Did you talk to {name} about it ?"],
    (RP, "detail"): ["So your {rel} {name} {event_you} .", "If I understand you , {name} {event_you} ."],
    (RF, "feeling"): ["It sounds like you feel really {feeling} because of {name} .",
                      "You seem {feeling} , and that is hard when it is about your {rel} ."],
    (AR, "feeling"): ["Feeling {feeling} makes sense . You are doing your best with {name} ."],
    (AR, "blame"): ["It's not your fault . Anyone would struggle with {problem_you} .",
                    "You are not the problem . You care about {name} , and that shows ."],
    (PS, "advice"): ["Maybe you could {advice} .", "One idea : {advice} ."],
    (SD, "experience"): ["Yes , my own {rel} once did something similar , and I felt {feeling} too .",
                         "I went through something like this with my {rel} , so I know how {feeling} it feels ."],
    (OT, "thanks"): ["You are welcome . I hope it works out with {name} .",
                     "Any time . I am happy we talked about your {rel} ."],
}


def _you(text: str) -> str:
    """Seeker's first person -> supporter's second person, for the details the supporter repeats."""
    return " ".join({"my": "your", "me": "you", "I": "you", "am": "are"}.get(w, w) for w in text.split())


def _pick_strategy(rng: random.Random, cue: str) -> str:
    r, acc = rng.random(), 0.0
    for strategy, p in CUE_STRATEGIES[cue]:
        acc += p
        if r < acc:
            return strategy
    return CUE_STRATEGIES[cue][-1][0]


def _cue_plan(rng: random.Random, last: str | None) -> tuple[bool, list[str]]:
    """(supporter opens?, the seeker's cues in order). ``last`` forces the cue of the final seeker turn."""
    sys_opens = rng.random() < 0.25
    cues = [] if sys_opens else (["hello"] if rng.random() < 0.5 else [])
    cues += ["vague", "detail"]
    middle = rng.sample(["feeling", "blame", "advice", "experience"], rng.randint(1, 3))
    cues += middle
    if rng.random() < 0.6:
        cues.append(rng.choice(["thanks", "bye"]))
    if last is not None:
        cues = [c for c in cues if c != last and c not in ("thanks", "bye")]
        cues.append(last)
    return sys_opens, cues


def make_dialogue(rng: random.Random, last_strategy: str | None = None) -> dict:
    """One dialogue; ``last_strategy`` (test split) forces the strategy of the final supporter turn."""
    problem_type, emotion, rel, problem, event, advice = rng.choice(TOPICS)
    name = rng.choice(NAMES)
    feeling = rng.choice(FEELINGS)
    slots = {"name": name, "rel": rel, "problem": problem, "event": event, "feeling": feeling,
             "event_you": _you(event), "problem_you": _you(problem), "advice": advice.format(name=name)}
    last_cue = None
    if last_strategy is not None:
        last_cue = {GR: "bye", Q: "vague", RP: "detail", RF: "feeling", AR: "blame", PS: "advice",
                    SD: "experience", OT: "thanks"}[last_strategy]
    sys_opens, cues = _cue_plan(rng, last_cue)
    dialog = []
    if sys_opens:
        dialog.append({"text": rng.choice(RESPONSES[(GR, "open")]), "speaker": "sys", "strategy": GR})
    for k, cue in enumerate(cues):
        dialog.append({"text": rng.choice(CUES[cue]).format(**slots), "speaker": "usr"})
        strategy = last_strategy if (k == len(cues) - 1 and last_strategy) else _pick_strategy(rng, cue)
        dialog.append({"text": rng.choice(RESPONSES[(strategy, cue)]).format(**slots), "speaker": "sys",
                       "strategy": strategy})
    # some dialogues end with a seeker turn that gets no answer (as in ESConv)
    if rng.random() < 0.3:
        dialog.append({"text": rng.choice(["Okay .", "I will think about it .", "Yes , maybe ."]), "speaker": "usr"})
    for turn in dialog:
        turn["text"] = tokenize_text(turn["text"])
    situation = tokenize_text(f"I have trouble with {problem} because my {rel} {name} {event} .")
    return {"emotion_type": emotion, "problem_type": problem_type, "situation": situation,
            "init_intensity": rng.randint(3, 5), "final_intensity": rng.randint(1, 3), "dialog": dialog}


def build_splits(seed: int = SEED) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    out = {}
    for split, n in SIZES.items():
        if split == "test":  # the released test enumeration keeps the last supporter turn: balance its strategy
            order = [GR, Q, RP, RF, AR, PS, SD, OT]
            out[split] = [make_dialogue(rng, order[i % len(order)]) for i in range(n)]
        else:
            out[split] = [make_dialogue(rng) for _ in range(n)]
    return out


def render(dialogues: list[dict], split: str) -> str:
    lines = []
    for i, obj in enumerate(dialogues):
        parse_dialogue(obj, f"{split} demo", i + 1, i)  # same validation as every consumer
        lines.append(json.dumps(obj, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def run(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write (or --check) data/demo/{train,valid,test}.txt")
    p.add_argument("--out_dir", "--output_dir", dest="out_dir", default=os.path.dirname(os.path.abspath(__file__)),
                   help="where train/valid/test.txt go (default: this folder, i.e. rewrite the bundled files)")
    p.add_argument("--check", action="store_true", help="exit 1 when the files differ from a rebuild")
    args = p.parse_args(argv)
    stale = []
    for split, dialogues in build_splits().items():
        text = render(dialogues, split)
        path = os.path.join(args.out_dir, f"{split}.txt")
        if args.check:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    stale.append(path)
        else:
            atomic_write_text(path, text)
            print(f"{split}: {len(dialogues)} dialogues -> {path}")
    if stale:
        raise UserError(f"{', '.join(stale)} differ from make_demo.py's output; rerun python data/demo/make_demo.py")
    return 0


def main(argv=None) -> int:
    """run() for the command line: stale files (--check) and unreadable or unwritable ones are one line and
    exit code 1 (src/magic/common/errors.py)."""
    return run_main("make_demo.py", lambda: run(argv), code=1)


if __name__ == "__main__":
    sys.exit(main())
