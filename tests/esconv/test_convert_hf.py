"""Getting ESConv: the HF thu-coai/esconv -> MultiESC converter (rules on hand-made dialogues, closeness to the
real files) and data/download_esconv.py (offline gives a clear way out and writes nothing; a server works)."""
import functools
import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error

import pytest

from magic.esconv.convert_hf import (
    HFFormatError, HubUnavailableError, convert_dialogue, convert_lines, hub_lines, map_label,
    merged_label, tokenize_text,
)
from magic.esconv.dialogues import enumerate_samples, load_dialogues, load_samples


def _script(repo_root, name):
    spec = importlib.util.spec_from_file_location(name, repo_root / "data" / f"{name}.py")
    mod = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def convert_dir(repo_root):
    """data/convert_hf_esconv.py --input_dir IN --output_dir OUT [--split S], in process (its errors raised)."""
    script = _script(repo_root, "convert_hf_esconv")

    def convert(input_dir, output_dir, splits=None):
        split = ["--split", *splits] if splits else []
        return script.run(["--input_dir", str(input_dir), "--output_dir", str(output_dir), *split])
    return convert


def hf(dialog, situation="I feel stressed about work.", init="4", final="2", **extra):
    seeker = {"initial_emotion_intensity": init}
    if final is not None:
        seeker["final_emotion_intensity"] = final
    obj = {"experience_type": "Current Experience", "emotion_type": "anxiety", "problem_type": "job crisis",
           "situation": situation, "survey_score": {"seeker": seeker, "supporter": {}}, "dialog": dialog}
    obj.update(extra)
    return obj


def u(text):
    return {"text": text, "speaker": "usr"}


def s(text, strategy):
    return {"text": text, "speaker": "sys", "strategy": strategy}


# ------------------------------------------------------------------------------------------- units
def test_tokenize_text():
    assert tokenize_text("I'm fine, thanks") == "I ' m fine , thanks ."
    assert tokenize_text("Really?!  OK...") == "Really ? ! OK . . ."
    assert tokenize_text("co-worker (again)") == "co - worker ( again )"
    assert tokenize_text("I’m fine.") == "I’m fine ."  # non-ASCII apostrophe stays attached, as in MultiESC
    assert tokenize_text("  spaced\tout \n") == "spaced out ."


def test_merge_consecutive_turns_and_drop_exact_repeats():
    obj = hf([u("Hi"), u("I lost my job"), u("I lost my job"), s("I'm sorry.", "Reflection of feelings"),
              s("What happened?", "Question"), u("They closed the office.")])
    out = convert_dialogue(obj)
    assert [t["speaker"] for t in out["dialog"]] == ["usr", "sys", "usr"]
    assert out["dialog"][0]["text"] == "Hi . I lost my job ."  # repeat dropped, parts joined
    assert out["dialog"][1] == {"text": "I ' m sorry . What happened ?", "speaker": "sys",
                                "strategy": "Reflection of feelings"}  # first part's label
    assert out["dialog"][2]["text"] == "They closed the office ."
    assert "strategy" not in out["dialog"][0]
    # a repeat by the *other* speaker is a real turn, not a double send
    out = convert_dialogue(hf([u("Thanks"), s("Thanks", "Others"), u("Bye")]))
    assert len(out["dialog"]) == 3


def test_top_level_keys_and_intensity_default():
    out = convert_dialogue(hf([u("Hello")], init="5", final=None))
    assert list(out) == ["emotion_type", "problem_type", "situation", "init_intensity", "final_intensity", "dialog"]
    assert (out["init_intensity"], out["final_intensity"]) == (5, 2)
    assert out["situation"] == "I feel stressed about work."  # the situation is not tokenised
    assert convert_dialogue(hf([u("Hello")], final="3"))["final_intensity"] == 3


def test_label_mapping():
    assert map_label("Providing Suggestions") == "Providing Suggestions or Information"
    assert map_label("Information") == "Providing Suggestions or Information"
    assert map_label("Reflection of feelings") == "Reflection of feelings"
    assert map_label("Greeting") == "Greeting"  # already-converted labels pass through
    with pytest.raises(KeyError, match="Providing Suggestions"):
        map_label("Encouragement")
    d = hf([u("Hi"), s("You could try a walk.", "Providing Suggestions"), u("ok"),
            s("Walking lowers stress hormones.", "Information")])
    assert [t.get("strategy") for t in convert_dialogue(d)["dialog"]] == [
        None, "Providing Suggestions or Information", None, "Providing Suggestions or Information"]


def test_merged_label_rules():
    # the first part names the merged turn ...
    assert merged_label(["Affirmation and Reassurance", "Question"], ["You did well.", "How now?"], False) \
        == "Affirmation and Reassurance"
    # ... unless it is a filler "Others" before a real strategy
    assert merged_label(["Others", "Self-disclosure"], ["Ok.", "I went through that too."], False) == "Self-disclosure"
    # Greeting heuristic: only for "Others" turns, and only where the text looks like one
    assert merged_label(["Others"], ["Hello, how are you doing?"], True) == "Greeting"
    assert merged_label(["Others"], ["Take care, bye!"], False) == "Greeting"
    assert merged_label(["Others"], ["That is a lot to carry."], False) == "Others"
    assert merged_label(["Question"], ["Hi, what brings you here?"], True) == "Question"
    assert merged_label(["Others", "Question"], ["Hi there!", "What is on your mind?"], True) == "Greeting"
    assert merged_label(["Others"], ["Take care, bye!"], False, greeting="opening") == "Others"
    assert merged_label(["Others"], ["Hello!"], True, greeting="opening") == "Greeting"
    assert merged_label(["Others"], ["Hello!"], True, greeting="none") == "Others"


def test_hub_row_form_is_accepted():
    inner = hf([u("Hi"), s("Hello! How can I help?", "Others")])
    out = convert_lines([json.dumps({"text": json.dumps(inner)})], "rows")
    assert out[0]["dialog"][1]["strategy"] == "Greeting"


def test_output_is_valid_multiesc(tmp_path, convert_dir):
    lines = [json.dumps(hf([s("Hi, how are you?", "Others"), u("Not great."), u("My dog died."),
                            s("I'm so sorry.", "Reflection of feelings")])) + "\n",
             "\n",
             json.dumps(hf([u("I can't sleep."), s("Since when?", "Question"), u("A month.")])) + "\n"]
    src = tmp_path / "valid.json"
    src.write_text("".join(lines), encoding="utf-8")
    convert_dir(tmp_path, tmp_path / "out", splits=("valid",))
    dialogues = load_dialogues(tmp_path / "out" / "valid.txt")
    assert [len(d.turns) for d in dialogues] == [3, 3]
    assert dialogues[1].line == 2  # blank input lines are not copied
    assert [x.id for x in enumerate_samples(dialogues, "valid")] == ["valid-0-2", "valid-1-1"]


BAD_LINES = [
    ("{not json", "not valid JSON"),
    (json.dumps({"situation": "x"}), "missing key 'dialog'"),
    (json.dumps(hf([u("Hi"), {"text": "Hello", "speaker": "bot"}])), "speaker 'bot'"),
    (json.dumps(hf([u("Hi"), s("Hello", "Cheering")])), "unknown strategy 'Cheering'"),
    (json.dumps(hf([u("Hi"), {"text": "Hello", "speaker": "sys"}])), "unknown strategy None"),
    (json.dumps(hf([u("Hi"), s("  ", "Question")])), "empty or missing 'text'"),
    (json.dumps(hf([u("Hi")], init=None)), "initial_emotion_intensity"),
    (json.dumps([1, 2]), "expected a JSON object"),
]


@pytest.mark.parametrize("bad,expected", BAD_LINES)
def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path, repo_root, bad, expected):
    good = json.dumps(hf([u("Hi"), s("Hello!", "Others")]))
    src = tmp_path / "test.json"
    src.write_text(good + "\n" + good + "\n" + bad + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    r = subprocess.run([sys.executable, str(repo_root / "data" / "convert_hf_esconv.py"),
                        "--input", str(src), "--output", str(out)], capture_output=True, text=True)
    assert r.returncode != 0
    assert f"{src}:3:" in r.stderr and expected in r.stderr, r.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]  # no temp file left behind either


def test_failing_split_writes_no_split(tmp_path, convert_dir):
    good = json.dumps(hf([u("Hi"), s("Hello!", "Others")])) + "\n"
    for name in ("train", "valid"):
        (tmp_path / f"{name}.json").write_text(good, encoding="utf-8")
    (tmp_path / "test.json").write_text(good + "{broken\n", encoding="utf-8")
    out_dir = tmp_path / "out"
    with pytest.raises(HFFormatError, match=r"test\.json:2: not valid JSON"):
        convert_dir(tmp_path, out_dir)
    assert not out_dir.exists() or not any(out_dir.iterdir())  # train/valid were not written either


def test_hub_offline_gives_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="--input"):
        hub_lines("test")


def test_cli_from_hub_offline(tmp_path, repo_root):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}  # an empty cache: nothing to fall back on
    r = subprocess.run([sys.executable, str(repo_root / "data" / "convert_hf_esconv.py"), "--from_hub", "--output_dir",
                        str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert "no internet" in r.stderr.lower() or "without internet" in r.stderr.lower()
    assert "--input" in r.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- real data
def _compare(converted, gold_path):
    gold = [json.loads(line) for line in open(gold_path, encoding="utf-8")]
    assert len(converted) == len(gold)
    same_count = same_meta = text_ok = turns = label_ok = sys_turns = 0
    count_mismatch = []
    for i, (a, b) in enumerate(zip(converted, gold)):
        same_meta += all(a[k] == b[k] for k in ("emotion_type", "problem_type", "situation",
                                                "init_intensity", "final_intensity"))
        if len(a["dialog"]) != len(b["dialog"]):
            count_mismatch.append(i)
            continue
        same_count += 1
        for x, y in zip(a["dialog"], b["dialog"]):
            turns += 1
            text_ok += x["text"] == y["text"]
            if y["speaker"] == "sys":
                sys_turns += 1
                label_ok += x.get("strategy") == y["strategy"]
    return dict(dialogues=len(gold), same_count=same_count, count_mismatch=count_mismatch, same_meta=same_meta,
                turns=turns, text_ok=text_ok, sys_turns=sys_turns, label_ok=label_ok)


def test_real_valid_test_match_multiesc(esconv_dir, capsys):
    total = {}
    for split in ("valid", "test"):
        with open(esconv_dir / "hf_split" / f"{split}.json", encoding="utf-8") as f:
            converted = convert_lines(f, split)
        r = _compare(converted, esconv_dir / "magic" / f"{split}.txt")
        for k, v in r.items():
            total[k] = total.get(k, 0) + v if not isinstance(v, list) else total.get(k, []) + v
    with capsys.disabled():
        print(f"\n[convert_hf vs MultiESC valid+test] turn counts equal: {total['same_count']}/{total['dialogues']} "
              f"dialogues; top-level keys equal: {total['same_meta']}/{total['dialogues']}; exact turn text: "
              f"{total['text_ok']}/{total['turns']} = {100 * total['text_ok'] / total['turns']:.1f}%; "
              f"strategy agreement: {total['label_ok']}/{total['sys_turns']} = "
              f"{100 * total['label_ok'] / total['sys_turns']:.1f}%")
    assert total["dialogues"] == 390
    assert total["count_mismatch"] == []
    assert total["same_meta"] == 390
    assert total["text_ok"] / total["turns"] >= 0.90
    assert total["label_ok"] / total["sys_turns"] >= 0.95


def test_real_train_gives_released_sample_count(esconv_dir, tmp_path, capsys, convert_dir):
    convert_dir(esconv_dir / "hf_split", tmp_path, splits=("train",))
    samples = load_samples(tmp_path / "train.txt", "train")
    assert len(samples) == 10191
    # the reconstructed train file carries the gold labels of MAGIC's motivations for every target
    gold = load_samples(esconv_dir / "reconstructed" / "train.txt", "train")
    assert [x.id for x in samples] == [x.id for x in gold]
    agree = sum(x.strategy == y.strategy for x, y in zip(samples, gold))
    with capsys.disabled():
        print(f"\n[convert_hf train] {len(samples)} samples; target strategy = released motivation label: "
              f"{agree}/{len(samples)} = {100 * agree / len(samples):.1f}%")
    assert agree / len(samples) >= 0.95


# ---------------------------------------------------------------------------- data/download_esconv.py
@pytest.fixture(scope="module")
def dl(repo_root):
    return _script(repo_root, "download_esconv")


@pytest.fixture
def serve(tmp_path):
    """Serve a folder over HTTP on 127.0.0.1 (stdlib server, a free port); yields a function folder -> base URL."""
    servers = []

    def start(folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a, **k: None  # keep the test output quiet
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/data"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _crlf_copy_of_demo(repo_root, folder):
    # MultiESC's files have CRLF line endings; the demo data stands in for them
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        text = (repo_root / "data" / "demo" / f"{split}.txt").read_text(encoding="utf-8")
        (folder / f"{split}.txt").write_bytes(text.replace("\n", "\r\n").encode("utf-8"))


def test_offline_names_the_converter_and_writes_nothing(dl, tmp_path, monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(dl.urllib.request, "urlopen", no_network)
    out = tmp_path / "data"
    assert dl.main(["--output_dir", str(out)]) != 0
    err = capsys.readouterr().err
    assert "convert_hf_esconv.py" in err and "raw.githubusercontent.com/lwgkzl/MultiESC" in err
    assert not out.exists()


def test_closed_port_cli(tmp_path, repo_root):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "data"
    out.mkdir()
    (out / "valid.txt").write_text("keep me\n", encoding="utf-8")
    r = subprocess.run([sys.executable, str(repo_root / "data" / "download_esconv.py"), "--output_dir", str(out),
                        "--base_url", f"http://127.0.0.1:{port}/data", "--timeout", "5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "convert_hf_esconv.py" in r.stderr and f"127.0.0.1:{port}" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["valid.txt"]
    assert (out / "valid.txt").read_text(encoding="utf-8") == "keep me\n"  # not overwritten


def test_download_from_local_server(dl, tmp_path, repo_root, serve, capsys):
    _crlf_copy_of_demo(repo_root, tmp_path / "www" / "data")
    base = serve(tmp_path / "www")
    out = tmp_path / "out"
    assert dl.main(["--output_dir", str(out), "--base_url", base, "--timeout", "10"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.txt", "train.txt", "valid.txt"]  # no temporaries
    for split in ("train", "valid", "test"):
        data = (out / f"{split}.txt").read_bytes()
        assert b"\r" not in data
        assert data == (repo_root / "data" / "demo" / f"{split}.txt").read_bytes()
        assert len(load_dialogues(out / f"{split}.txt")) == {"train": 40, "valid": 10, "test": 16}[split]
    assert "train: 40 dialogues, 186 samples" in capsys.readouterr().out


def test_invalid_or_missing_remote_file_writes_nothing(dl, tmp_path, repo_root, serve, capsys):
    www = tmp_path / "www" / "data"
    _crlf_copy_of_demo(repo_root, www)
    lines = (www / "test.txt").read_bytes().split(b"\r\n")
    lines[2] = lines[2].replace(b'"speaker": "usr"', b'"speaker": "bot"', 1)
    (www / "test.txt").write_bytes(b"\r\n".join(lines))
    base = serve(tmp_path / "www")
    out = tmp_path / "out"
    assert dl.main(["--output_dir", str(out), "--base_url", base]) == 1
    err = capsys.readouterr().err
    assert f"{base}/test.txt:3:" in err and "speaker 'bot'" in err
    assert list(out.iterdir()) == []  # train and valid were fine, but none is put in place alone

    (www / "test.txt").unlink()
    assert dl.main(["--output_dir", str(out), "--base_url", base]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert list(out.iterdir()) == []
