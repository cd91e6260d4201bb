"""Small MultiESC-style dialogues for tests (one JSON object per dialogue line)."""


def make_dialogue(i, opener="usr", n_turns=6, strategies=("Question", "Reflection of feelings", "Self-disclosure",
                                                          "Others"),
                  text="dialogue {i} turn {t} : I ' m here ."):
    """Dialogue ``i``: ``n_turns`` alternating turns starting with ``opener`` ("usr" seeker, "sys" supporter);
    supporter turn ``t`` gets ``strategies[t % len(strategies)]``; ``text`` is formatted with ``i`` and ``t``."""
    turns, speaker = [], opener
    for t in range(n_turns):
        turn = {"speaker": speaker, "text": text.format(i=i, t=t)}
        if speaker == "sys":
            turn["strategy"] = strategies[t % len(strategies)]
        turns.append(turn)
        speaker = "sys" if speaker == "usr" else "usr"
    return {"situation": f"situation {i}", "dialog": turns}
