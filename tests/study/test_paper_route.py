"""The paper route (README, "The paper on one GPU"): the data folder by data/fetch_data.py, the paper profile's
refusals without data or models, its plan in hours, and reproduce.py without a profile."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from magic.study.data import DATA_FILES, EXPECTED_SAMPLES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, **env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=600)


def test_fetch_from_a_local_copy_builds_and_checks_the_folder_then_the_paper_plan_lists_every_cell(esconv_dir, tmp_path):
    out = tmp_path / "esconv"
    p = _run(["data/fetch_data.py", "--from", str(esconv_dir), "--output_dir", str(out)])
    assert p.returncode == 0, p.stderr
    for split, n in EXPECTED_SAMPLES.items():
        assert f"{DATA_FILES[split]}: {n:,} samples, {n:,} distinct ids" in p.stdout
    for rel in DATA_FILES.values():
        assert (out / rel).read_bytes() == (esconv_dir / rel).read_bytes()
    assert len(json.loads((out / "magic" / "motivations_4_LLaMA.ids.json").read_text())) == 10191
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no staging folder left
    plan = _run(["scripts/reproduce.py", "--profile", "paper", "--plan", "--work", str(tmp_path / "w"),
                 "--results", str(tmp_path / "r")], MAGIC_DATA_DIR=str(out))
    assert plan.returncode == 0, plan.stderr
    assert "estimates assume one A100/H100 80 GB" in plan.stdout
    rows = [line for line in plan.stdout.splitlines() if " key " in line]
    assert len(rows) == 44 and all(" h   key " in r for r in rows)
    assert "44 cells, 0 done, 44 to run, estimated" in plan.stdout and "data: missing" not in plan.stdout


def test_fetch_refuses_a_folder_without_a_file_and_replaces_nothing_when_a_check_fails(esconv_dir, tmp_path):
    partial = tmp_path / "partial"
    (partial / "magic").mkdir(parents=True)
    p = _run(["data/fetch_data.py", "--from", str(partial), "--output_dir", str(tmp_path / "o")])
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "missing reconstructed/train.txt, magic/valid.txt, magic/test.txt, magic/motivations_4_LLaMA.json" in p.stderr
    bad = tmp_path / "bad"
    for rel in DATA_FILES.values():
        (bad / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(esconv_dir / rel, bad / rel)
    motivations = json.loads((bad / DATA_FILES["motivations"]).read_text())
    (bad / DATA_FILES["motivations"]).write_text(json.dumps(motivations[1:] + motivations[:1], ensure_ascii=False))
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    p = _run(["data/fetch_data.py", "--from", str(bad), "--output_dir", str(out)])
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "magic/motivations_4_LLaMA.json: not the released file" in p.stderr
    assert os.listdir(out) == ["keep.txt"]


def test_the_paper_profile_without_its_models_exits_2_naming_the_download(esconv_dir, tmp_path):
    p = _run(["scripts/reproduce.py", "--profile", "paper", "--llm_path", str(tmp_path / "llama"),
              "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r")], MAGIC_DATA_DIR=str(esconv_dir))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert (f"--llm_path {tmp_path / 'llama'}: no model folder (no config.json); fetch it with "
            f"`hf download meta-llama/Llama-2-7b-hf --local-dir {tmp_path / 'llama'}`") in p.stderr
    assert not (tmp_path / "w").exists()


def test_without_a_profile_reproduce_prints_its_help_and_each_profiles_size(tmp_path):
    p = subprocess.run(["bash", "scripts/reproduce.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PY": sys.executable})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: reproduce.py")
    for name in ("smoke", "cpu", "gpu-small", "paper"):
        assert any(line.split()[:1] == [name] and " cells " in line and " h of cells " in line
                   for line in p.stdout.splitlines()), name
    assert "one A100/H100 80 GB" in p.stdout


def test_fetch_downloads_the_split_and_the_motivations(esconv_dir, tmp_path):
    """The download path against a local HTTP server holding MultiESC-style files (CRLF) and the released file."""
    www = tmp_path / "www"
    (www / "data").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        text = (esconv_dir / DATA_FILES[split]).read_text(encoding="utf-8")
        (www / "data" / f"{split}.txt").write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    shutil.copyfile(esconv_dir / DATA_FILES["motivations"], www / "m.json")
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(www)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(server.stdout.readline().split("port ")[1].split()[0])
        base = f"http://127.0.0.1:{port}"
        p = _run(["data/fetch_data.py", "--output_dir", str(tmp_path / "out"), "--multiesc_url", f"{base}/data",
                  "--motivations_url", f"{base}/m.json", "--timeout", "20"])
    finally:
        server.terminate()
        server.wait()
    assert p.returncode == 0, p.stderr
    for rel in DATA_FILES.values():
        assert (tmp_path / "out" / rel).read_bytes() == (esconv_dir / rel).read_bytes(), rel
