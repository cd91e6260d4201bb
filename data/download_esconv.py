"""Step 0: download the MultiESC split of ESConv (train/valid/test.txt, 910/195/195 dialogues) into data/.

    python data/download_esconv.py                      # -> data/{train,valid,test}.txt
    python data/download_esconv.py --output_dir DIR

The files come from the MultiESC repository (github.com/lwgkzl/MultiESC, folder MultiESC/data/),
pinned to a commit so the bytes do not change under us. They are converted from CRLF to LF line
endings (MAGIC's copies of valid/test are the LF version, otherwise identical) and validated with
magic.esconv.dialogues before anything is written; the three files are only put in place when all three
downloaded and validated.

Without internet access, build the same files from the HF-form data instead:
    python data/convert_hf_esconv.py --input_dir <folder with HF train/valid/test.json> --output_dir data/

Exit codes: 0 done, 1 a file could not be downloaded, validated or written (one ``download_esconv.py:
error: ...`` line naming the URL or file), 2 bad flag, 130 interrupted.
"""
import argparse
import os
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

from magic.common.artifacts import SPLITS
from magic.common.errors import run_main
from magic.common.settings import add_options, from_namespace, option
from magic.common.validate import positive_float
from magic.esconv.dialogues import ESConvFormatError, load_dialogues, load_samples

MULTIESC_COMMIT = "46834e134320253e51920a2f5d34f166335bd965"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/lwgkzl/MultiESC/{MULTIESC_COMMIT}/MultiESC/data"
EXPECTED_DIALOGUES = {"train": 910, "valid": 195, "test": 195}
OFFLINE_HINT = ("Without internet access, build the same files from the HF-form ESConv data instead:\n"
                "    python data/convert_hf_esconv.py --input_dir <folder with HF train/valid/test.json> "
                "--output_dir data/\n(or `python data/convert_hf_esconv.py --from_hub` where the Hugging Face hub "
                "is reachable). See data/convert_hf_esconv.py --help.")
OFFLINE_HINT_LINE = ("without internet access, build the same files from the HF-form ESConv data with "
                     "data/convert_hf_esconv.py --input_dir DIR --output_dir data/ (see its --help)")


@dataclass
class DownloadConfig:
    output_dir: str = option("data", "where train/valid/test.txt go")
    base_url: str = option(DEFAULT_BASE_URL, "folder URL holding train/valid/test.txt (default: MultiESC at commit "
                           f"{MULTIESC_COMMIT[:10]})", show_default=False)
    timeout: float = option(30.0, "seconds per request", type=positive_float)


class DownloadError(RuntimeError):
    """A file could not be downloaded or is not valid MultiESC data."""


def fetch(url: str, timeout: float) -> bytes:
    """GET ``url``; any network failure becomes a DownloadError that names the URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: could not connect ({reason})") from None


def download_split_files(cfg: DownloadConfig, splits: tuple[str, ...] = SPLITS) -> dict[str, str]:
    """Download, normalise to LF, validate, then move all files into place. Returns split -> path.

    Files are staged as hidden temporaries beside their destination; on any failure every temporary
    is removed and no destination file is created or replaced.
    """
    base_url, output_dir = cfg.base_url, cfg.output_dir
    texts: dict[str, tuple[str, str]] = {}
    # everything is fetched before the disk is touched: offline, not even output_dir is created
    for split in splits:
        url = f"{base_url.rstrip('/')}/{split}.txt"
        data = fetch(url, cfg.timeout)
        try:
            texts[split] = (url, data.decode("utf-8").replace("\r\n", "\n"))
        except UnicodeDecodeError as e:
            raise DownloadError(f"{url}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    os.makedirs(output_dir, exist_ok=True)
    staged: dict[str, str] = {}
    try:
        for split, (url, text) in texts.items():
            tmp = os.path.join(output_dir, f".{split}.txt.download")
            staged[split] = tmp
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            try:
                dialogues = load_dialogues(tmp)
            except ESConvFormatError as e:
                # name the URL, not our temporary file
                raise DownloadError(str(e).replace(tmp, url, 1) + " (downloaded file is not MultiESC data)") from None
            if not dialogues:
                raise DownloadError(f"{url}: no dialogues in the downloaded file")
        final = {}
        for split, tmp in staged.items():
            final[split] = os.path.join(output_dir, f"{split}.txt")
            os.replace(tmp, final[split])
        staged.clear()
        return final
    finally:
        for tmp in staged.values():
            if os.path.exists(tmp):
                os.unlink(tmp)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=OFFLINE_HINT, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, DownloadConfig)
    return p


def run(argv: list[str] | None = None) -> int:
    args = from_namespace(DownloadConfig, build_parser().parse_args(argv))
    try:
        paths = download_split_files(args)
    except DownloadError as e:
        raise DownloadError(f"{e}; {OFFLINE_HINT_LINE}") from None
    for split, path in paths.items():
        n_dialogues = len(load_dialogues(path))
        note = "" if args.base_url != DEFAULT_BASE_URL or n_dialogues == EXPECTED_DIALOGUES[split] else \
            f" (expected {EXPECTED_DIALOGUES[split]})"
        print(f"{split}: {n_dialogues} dialogues{note}, {len(load_samples(path, split))} samples -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """run() for the command line: a download, validation or write that fails is one line and exit code 1
    (src/magic/common/errors.py)."""
    return run_main("download_esconv.py", lambda: run(argv), code=1, extra=(DownloadError,))


if __name__ == "__main__":
    sys.exit(main())
