"""Build the data folder of the paper route and the results study, then check it (layout: docs/STEPS.md, "The
data folder").

    python data/fetch_data.py                            # with internet: MultiESC's split + the released motivations
    python data/fetch_data.py --from ../shared/data/esconv   # no internet: local copies in the same layout
    python data/fetch_data.py --output_dir DIR           # default data/esconv (read when MAGIC_DATA_DIR is unset)

Downloaded, pinned to commits: MultiESC's train/valid/test.txt (github.com/lwgkzl/MultiESC, as step 0's
download_esconv.py; CRLF made LF) and the authors' ChatGPT motivations (github.com/Wh2018/MAGIC,
LLM_inference/motivations_4_LLaMA.json). Checked before anything is put in place: 10,191 / 2,156 / 195 samples,
valid/test and the motivations byte-equal to the released files (sha256), one motivation per training sample
naming its gold strategy, distinct sample ids (written beside the motivations as motivations_4_LLaMA.ids.json).
Exit codes: 0 built and checked; 1 a download or a check failed (one line; nothing is replaced); 2 a bad flag,
or --from lacks a file; 130 interrupted.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass

from magic.common.artifacts import SPLITS, ids_path
from magic.common.errors import UserError, run_main
from magic.common.io_utils import atomic_write_json, load_json
from magic.common.settings import add_options, from_namespace, option
from magic.common.validate import positive_float
from magic.esconv.dialogues import load_samples, strategy_mismatches
from magic.study.data import DATA_FILES, EXPECTED_SAMPLES, FETCHED_DIR

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC_COMMIT = "e7003b04d68a8c31e133fd790a865d03a8f6247e"
MOTIVATIONS_URL = (f"https://raw.githubusercontent.com/Wh2018/MAGIC/{MAGIC_COMMIT}/LLM_inference/"
                   "motivations_4_LLaMA.json")
# the released bytes (Wh2018/MAGIC at MAGIC_COMMIT; valid/test equal MultiESC's once CRLF is made LF)
RELEASED_SHA256 = {
    "valid": "55dd113b1e8ce617e53cd593ba5a95cc5f1c3634f999352d705d7b7aa0c0ca08",
    "test": "420222e7943da81e7a92eb01ed1851c6c5a32c0f7abd9e371d6c759b46a71f52",
    "motivations": "743d36033e0d855dc508a7fc4edf369b3ac1c9f9098b7c5903b7e3ec2950289b",
}


@dataclass
class FetchConfig:
    output_dir: str = option(FETCHED_DIR, "the data folder to build", show_default=False)
    source: str | None = option(None, "a folder in the same layout to copy from instead of downloading",
                                flags=("--from",), metavar="DIR")
    timeout: float = option(60.0, "seconds per download request", type=positive_float)
    multiesc_url: str | None = option(None, "folder URL of MultiESC's train/valid/test.txt (default: "
                                      "download_esconv.py's pinned commit)")
    motivations_url: str = option(MOTIVATIONS_URL, "URL of the released motivations_4_LLaMA.json (default: "
                                  f"Wh2018/MAGIC at {MAGIC_COMMIT[:10]})", show_default=False)


class DataCheckError(RuntimeError):
    """The built folder is not the data the route needs."""


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def copy_from(src: str, stage: str) -> None:
    missing = [rel for rel in DATA_FILES.values() if not os.path.isfile(os.path.join(src, rel))]
    if missing:
        raise UserError(f"--from {src}: missing {', '.join(missing)} (the layout: docs/STEPS.md, \"The data folder\")")
    for rel in DATA_FILES.values():
        os.makedirs(os.path.dirname(os.path.join(stage, rel)), exist_ok=True)
        shutil.copyfile(os.path.join(src, rel), os.path.join(stage, rel))


class DownloadError(RuntimeError):
    """A file could not be downloaded."""


def download(stage: str, cfg: "FetchConfig") -> None:
    """MultiESC's split by step 0's own downloader (pinned, CRLF made LF, validated), then the motivations."""
    split_dir = os.path.join(stage, "multiesc")
    base = ["--base_url", cfg.multiesc_url] if cfg.multiesc_url else []
    p = subprocess.run([sys.executable, os.path.join(HERE, "download_esconv.py"), "--output_dir", split_dir,
                        "--timeout", str(cfg.timeout), *base], capture_output=True, text=True)
    if p.returncode != 0:  # its one line, less its own offline advice: ours is --from
        line = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        raise DownloadError(line.split("error: ", 1)[-1].split("; without internet", 1)[0].split(" (MAGIC_DEBUG")[0])
    for split in SPLITS:
        dest = os.path.join(stage, DATA_FILES[split])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(os.path.join(split_dir, f"{split}.txt"), dest)
    shutil.rmtree(split_dir)
    try:
        with urllib.request.urlopen(cfg.motivations_url, timeout=cfg.timeout) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{cfg.motivations_url}: could not download ({getattr(e, 'reason', e)})") from None
    with open(os.path.join(stage, DATA_FILES["motivations"]), "wb") as f:
        f.write(data)


def check(root: str) -> list[str]:
    """The folder's checks (DataCheckError on the first that fails); writes the motivations' ids sidecar.
    Returns one line per file."""
    lines, samples = [], {}
    for split in SPLITS:
        path = os.path.join(root, DATA_FILES[split])
        samples[split] = load_samples(path, split)
        n = len(samples[split])
        if n != EXPECTED_SAMPLES[split]:
            raise DataCheckError(f"{DATA_FILES[split]}: {n} samples; MAGIC's {split} split has {EXPECTED_SAMPLES[split]}")
        ids = {s.id for s in samples[split]}
        if len(ids) != n:
            raise DataCheckError(f"{DATA_FILES[split]}: {n - len(ids)} repeated sample ids")
        lines.append(f"{DATA_FILES[split]}: {n:,} samples, {len(ids):,} distinct ids")
    for role, digest in RELEASED_SHA256.items():
        if sha256(os.path.join(root, DATA_FILES[role])) != digest:
            raise DataCheckError(f"{DATA_FILES[role]}: not the released file (sha256 differs from Wh2018/MAGIC "
                                 f"at {MAGIC_COMMIT[:10]})")
    mot_path = os.path.join(root, DATA_FILES["motivations"])
    motivations = load_json(mot_path, "motivations")
    train = samples["train"]
    if not isinstance(motivations, list) or len(motivations) != len(train):
        raise DataCheckError(f"{DATA_FILES['motivations']}: {len(motivations)} motivations for {len(train):,} "
                             "training samples")
    other, none, total, examples = strategy_mismatches(train, {s.id: m for s, m in zip(train, motivations)})
    if other or none:
        raise DataCheckError(f"{DATA_FILES['motivations']}: {other + none} of {total:,} motivations do not name "
                             f"their sample's gold strategy (e.g. {', '.join(examples)}): not in train.txt's order")
    atomic_write_json(ids_path(mot_path), [s.id for s in train])
    lines.append(f"{DATA_FILES['motivations']}: {total:,} released motivations, each naming its sample's gold "
                 f"strategy; ids in {os.path.basename(ids_path(mot_path))}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, FetchConfig)
    return p


def run(argv=None) -> int:
    cfg = from_namespace(FetchConfig, build_parser().parse_args(argv))
    out = os.path.abspath(cfg.output_dir)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    stage = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.")
    try:
        if cfg.source:
            copy_from(cfg.source, stage)
            origin = cfg.source
        else:
            download(stage, cfg)
            origin = f"MultiESC's repository + Wh2018/MAGIC {MAGIC_COMMIT[:10]}"
        lines = check(stage)
        for rel in [*DATA_FILES.values(), ids_path(DATA_FILES["motivations"])]:  # all checked: put in place
            os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
            os.replace(os.path.join(stage, rel), os.path.join(out, rel))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"data folder {out} (from {origin}):")
    print("\n".join(f"  {line}" for line in lines))
    default = os.path.abspath(FETCHED_DIR)
    print("the study and the paper route read it" + ("" if out == default else f" with MAGIC_DATA_DIR={out}"))
    return 0


def main(argv=None) -> int:
    """A download or check that fails: one line, exit 1; a bad flag or --from folder: exit 2."""
    def body():
        try:
            return run(argv)
        except DownloadError as e:
            raise DownloadError(f"{e}; without internet, copy the data folder (or MultiESC's train/valid/test.txt "
                                "and the released motivations, laid out as docs/STEPS.md says) from a machine that "
                                "has it and run `python data/fetch_data.py --from DIR`") from None

    return run_main("fetch_data.py", body, codes={DownloadError: 1, DataCheckError: 1})


if __name__ == "__main__":
    sys.exit(main())
