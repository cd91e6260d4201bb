"""Prompt builders and the step-2 prompt files (released bytes, ids, refusal on bad input)."""
import json
import subprocess
import sys


from magic.llm import templates as prompt_templates
from magic.esconv.dialogues import load_samples
from magic.llm.prompts import chatgpt_prompt, llama_clip, llama_prompt, wrap_default_template
from tests.esconv.test_esconv import SEEKER_OPENED_ODD, SUPPORTER_OPENED_EVEN, write_lines

SCRIPT = "LLM_inference/create_prompts_4_LLaMA.py"


def test_templates_equal_released_bytes(esconv_dir):
    d = esconv_dir / "magic" / "prompt_templates"
    for name in ("chatgpt_begin", "chatgpt_end", "llama_begin", "llama_end"):
        assert getattr(prompt_templates, name.upper()) == (d / f"{name}.txt").read_text(), name


def test_llama_clips(tmp_path):
    f = write_lines(tmp_path / "d.txt", [SEEKER_OPENED_ODD, SUPPORTER_OPENED_EVEN])
    s = load_samples(f, "train")
    assert llama_clip(s[0]) == "(1) Seeker: hi"  # first sample: no trailing newline (released)
    assert llama_clip(s[1]) == ("(1) Seeker: hi\n(2) Supporter: hello , what happened ? [Question]\n"
                                "(3) Seeker: I ' m sad\n")
    assert llama_clip(s[2]) == "(1) Supporter: hi there [Greeting]\n(2) Seeker: hello"
    assert llama_prompt(s[1]).endswith("(3) Seeker: I ' m sad\n\nMotivation:\n")
    t = load_samples(f, "test")
    assert llama_clip(t[0]).endswith("(3) Seeker: I ' m sad\n")  # test clips always end with a newline


def test_chatgpt_clips_mark_target(tmp_path):
    f = write_lines(tmp_path / "d.txt", [SEEKER_OPENED_ODD, SUPPORTER_OPENED_EVEN])
    s = load_samples(f, "train")
    p = chatgpt_prompt(s[1])
    assert p.startswith(prompt_templates.CHATGPT_BEGIN) and p.endswith(prompt_templates.CHATGPT_END)
    assert "(2) Supporter: hello , what happened ? [Question]\n" in p
    assert "(4) Supporter: that sounds hard . ***[Reflection of feelings]***\n" in p
    # released quirk: the first sample of a supporter-opened dialogue marks the opening turn too
    assert "(1) Supporter: hi there ***[Greeting]***\n(2) Seeker: hello\n(3) Supporter: how are you ? ***[Question]***\n" \
        in chatgpt_prompt(s[2])
    assert "(1) Supporter: hi there [Greeting]\n" in chatgpt_prompt(s[3])


def test_default_template():
    assert wrap_default_template("X") == "Human: X\nAssistant: "


def run_script(*args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True)


def test_released_prompt_files(esconv_dir, repo_root, tmp_path):
    out = tmp_path / "OUT"
    r = run_script("--train_file", str(esconv_dir / "reconstructed/train.txt"),
                   "--valid_file", str(esconv_dir / "magic/valid.txt"),
                   "--test_file", str(esconv_dir / "magic/test.txt"),
                   "--motivations_file", str(esconv_dir / "magic/motivations_4_LLaMA.json"),
                   "--output_dir", str(out), cwd=repo_root)
    assert r.returncode == 0, r.stderr
    assert (out / "prompts_4_LLaMA_test.json").read_bytes() == (esconv_dir / "magic/prompts_4_LLaMA_test.json").read_bytes()
    train = json.loads((out / "prompts_4_LLaMA.json").read_text())
    valid = json.loads((out / "prompts_4_LLaMA_valid.json").read_text())
    assert len(train) == 10191 and len(valid) == 2156
    assert set(train[0]) == {"instruction", "output"}
    ids = json.loads((out / "prompts_4_LLaMA_valid.ids.json").read_text())
    assert len(ids) == 2156 and ids[0].startswith("valid-0-")
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["prompts_4_LLaMA"]["columns"] == {"prompt": "instruction", "response": "output"}


def test_motivation_count_mismatch_writes_nothing(tmp_path, repo_root):
    d = write_lines(tmp_path / "d.txt", [SEEKER_OPENED_ODD, SUPPORTER_OPENED_EVEN])
    mot = tmp_path / "mot.json"
    mot.write_text(json.dumps(["[Question] a", "[Question] b", "[Question] c"]))  # 4 samples
    out = tmp_path / "out"
    r = run_script("--train_file", str(d), "--valid_file", str(d), "--test_file", str(d), "--allow_shared_dialogues",
                   "--motivations_file", str(mot), "--output_dir", str(out), cwd=repo_root)
    assert r.returncode != 0
    assert str(mot) in r.stderr and "3 motivations" in r.stderr and "4 samples" in r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_bad_dialogue_file_writes_nothing(tmp_path, repo_root):
    good = write_lines(tmp_path / "d.txt", [SEEKER_OPENED_ODD])
    bad = tmp_path / "bad.txt"
    bad.write_text(json.dumps(SEEKER_OPENED_ODD) + "\n{oops\n")
    mot = tmp_path / "mot.json"
    mot.write_text(json.dumps(["[Question] a", "[Reflection of feelings] b"]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "prompts_4_LLaMA_test.json").write_text("old")
    r = run_script("--train_file", str(good), "--valid_file", str(good), "--test_file", str(bad),
                   "--motivations_file", str(mot), "--output_dir", str(out), cwd=repo_root)
    assert r.returncode != 0 and f"{bad}:2:" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["prompts_4_LLaMA_test.json"]
    assert (out / "prompts_4_LLaMA_test.json").read_text() == "old"
