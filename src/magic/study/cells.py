"""One cell of the study: a training or an evaluation, cached by its settings.

A cell's *key* is a hash of its settings and of its dependencies' keys, so a changed setting anywhere
upstream gives every cell below it a new key (and a rerun redoes exactly those). Two places per cell:

* its **work folder** ``<work>/<name>/<key>/`` (models, decoded files: never committed; ``DONE`` marks a
  finished one; an unfinished one left by a killed run is removed before the cell starts again, unless the
  cell resumes by itself: generator trainings continue with ``main.py --resume``);
* its **result file** ``<results>/<name>.json``: what the tables are made of (metrics, per-sample scores
  keyed by sample id, wall time, machine, settings) -- numbers and labels only, never dialogue or generated
  text. Written atomically, last: a cell is done when its result file carries its current key.

A later session (or a fresh clone) with the result files but no work folders skips every done cell; a cell
that is not done and needs a done cell's files (a model to evaluate) first recreates them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from magic.common.errors import UserError
from magic.common.io_utils import atomic_write_json

try:
    import fcntl
except ImportError:  # Windows: no lock
    fcntl = None

DONE = "DONE"
MARKER = ".magic_study_cell"  # only folders carrying it are ever removed
LOCK = ".magic_study.lock"    # in the work root: one study at a time per work folder
# what every result file holds (the study writes all of them; run_cell below)
RECORD_FIELDS = {"cell": str, "key": str, "settings": dict, "deps": list, "wall_s": (int, float), "result": dict}
# lists beside an ``ids`` list that hold one entry per id (stage 1's predictions, step 8's per-sample scores)
PER_SAMPLE = ("pred", "correct", "rouge_l", "cider", "meteor", "nll", "tokens", "guess", "hyp_len", "ref_len")
MAX_RESULT_BYTES = 64 << 20   # the largest committed result file is ~0.3 MB


def settings_key(settings: dict, dep_keys: list[str]) -> str:
    blob = json.dumps({"settings": settings, "deps": dep_keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(text)
    return x


def _not_a_number(text: str):
    raise ValueError(text)


def load_result(path: str, name: str | None = None) -> dict:
    """A study result file, checked: JSON of at most MAX_RESULT_BYTES, every RECORD_FIELDS field with its type,
    only finite numbers (no NaN, no infinity), the cell ``name`` when given, and per-sample lists that match
    their ``ids`` (unique strings, one entry each). Anything else is a UserError naming the file: a result
    file is what the tables are made of, so a damaged one is never read as done or reported (fix or delete
    it; its cell then runs again)."""
    fix = "fix or delete it (its cell then runs again)"
    if os.path.getsize(path) > MAX_RESULT_BYTES:
        raise UserError(f"{path}: {os.path.getsize(path)} bytes, more than a study result file holds "
                        f"({MAX_RESULT_BYTES} at most); {fix}")
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.loads(f.read(), parse_float=_finite, parse_constant=_not_a_number)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); {fix}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); {fix}") from None
    except ValueError as e:
        raise UserError(f"{path}: holds {e} where a finite number belongs; {fix}") from None
    if not isinstance(rec, dict):
        raise UserError(f"{path}: expected a study result record (a JSON object), got {type(rec).__name__}; {fix}")
    for key, kind in RECORD_FIELDS.items():
        if not isinstance(rec.get(key), kind) or isinstance(rec.get(key), bool):
            what = "missing" if key not in rec else f"a {type(rec[key]).__name__}"
            raise UserError(f"{path}: not a study result record: field {key!r} is {what}; {fix}")
    if name is not None and rec["cell"] != name:
        raise UserError(f"{path}: holds cell {rec['cell']!r}, not {name!r} (moved or edited); {fix}")
    if rec["wall_s"] < 0:
        raise UserError(f"{path}: wall_s {rec['wall_s']} is negative; {fix}")
    _check_samples(path, rec["result"], "result", fix)
    return rec


def _check_samples(path: str, obj: Any, where: str, fix: str) -> None:
    """Every object with an ``ids`` list: unique id strings, and each sibling list one entry per id."""
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_samples(path, v, f"{where}[{i}]", fix)
        return
    if not isinstance(obj, dict):
        return
    ids = obj.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
            raise UserError(f"{path}: {where}.ids: expected a list of distinct sample id strings; {fix}")
        lists = {k: v for k, v in obj.items() if k in PER_SAMPLE}
        if isinstance(obj.get("bleu"), dict):
            lists.update({f"bleu.{k}": v for k, v in obj["bleu"].items() if k in PER_SAMPLE})
        for key, value in lists.items():
            if value is not None and (not isinstance(value, list) or len(value) != len(ids)):
                raise UserError(f"{path}: {where}.{key}: expected one entry per id ({len(ids)}); {fix}")
    for key, value in obj.items():
        _check_samples(path, value, f"{where}.{key}", fix)


def check_known_ids(path: str, ids: Iterable[str], known, what: str) -> None:
    """Sample ids a result file lists must be samples of the data (an edited or foreign file is named)."""
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise UserError(f"{path}: sample id {unknown[0]!r} (and {len(unknown) - 1} more) is not a {what} sample of "
                        "the data: edited, or made from other data; delete it (its cell then runs again)")


def _cpuinfo() -> tuple[str, list[str]]:
    """(CPU model name, CPU flags) of /proc/cpuinfo's first processor; ("", []) where there is none."""
    model, flags = "", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    return model, flags


def bf16_units() -> list[str]:
    """The CPU's bfloat16 matrix units (AMX, AVX512-BF16), as /proc/cpuinfo names them."""
    return [u for u in ("amx_bf16", "avx512_bf16") if u in _cpuinfo()[1]]


def machine() -> dict:
    """What a wall time was measured on (the CPU model, cores, whether bf16 matrix units exist)."""
    cpu = platform.processor() or "unknown"
    if cpu in ("unknown", "", "x86_64"):
        cpu = _cpuinfo()[0] or cpu
    units = bf16_units()
    out = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "bf16_units": units or None}
    try:
        import torch
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out


@dataclass
class Cell:
    """``run(ctx)`` does the work in ``ctx.work`` and returns the result record (JSON: numbers and labels)."""
    name: str
    settings: dict
    run: Callable[["Context"], dict]
    deps: list[str] = field(default_factory=list)
    estimate_s: float = 60.0
    resumable: bool = False  # its work folder may be continued instead of restarted
    key: str = ""


@dataclass
class Context:
    cell: Cell
    work: str                 # this cell's work folder
    study: "Study"

    def dep_work(self, name: str) -> str:
        """The work folder of dependency ``name`` (its files exist: the study made sure)."""
        return self.study.work_dir(self.study.cells[name])

    def dep_result(self, name: str) -> dict:
        return self.study.result(self.study.cells[name])["result"]


class Study:
    def __init__(self, cells: list[Cell], work_root: str, results_root: str, log: Callable[[str], None] = print):
        self.cells: dict[str, Cell] = {}
        for c in cells:
            missing = [d for d in c.deps if d not in self.cells]
            if missing:
                raise ValueError(f"cell {c.name}: dependencies {missing} must come before it")
            c.key = settings_key(c.settings, [self.cells[d].key for d in c.deps])
            self.cells[c.name] = c
        self.work_root, self.results_root, self.log = work_root, results_root, log

    # -- where things are
    def work_dir(self, cell: Cell) -> str:
        return os.path.join(self.work_root, cell.name, cell.key)

    def result_path(self, cell: Cell) -> str:
        return os.path.join(self.results_root, cell.name + ".json")

    def result(self, cell: Cell) -> dict | None:
        """The cell's checked result record (load_result), or None: no file, or one made with other settings
        or another profile (its key is not the cell's: the cell is not done, and running it replaces it)."""
        path = self.result_path(cell)
        if not os.path.exists(path):
            return None
        rec = load_result(path, cell.name)
        if rec["key"] != cell.key:
            return None
        if rec["settings"] != json.loads(json.dumps(cell.settings)):
            raise UserError(f"{path}: carries the key {cell.key} of other settings than its own (edited); delete it "
                            "(its cell then runs again)")
        return rec

    def check_targets(self, targets: list[str] | None) -> None:
        """--only: every name must be a cell of this plan (checked before anything runs)."""
        unknown = [t for t in targets or [] if t not in self.cells]
        if unknown:
            raise UserError(f"--only: {', '.join(unknown)}: no such cell in this profile's plan (see --plan; "
                            f"e.g. {next(iter(self.cells))}, s1/majority)")

    @contextmanager
    def locked(self):
        """Hold the work root's lock (flock: a kill releases it) while running; a second study on the same
        work folder is refused at once, before it touches any cell folder."""
        os.makedirs(self.work_root, exist_ok=True)
        path = os.path.join(self.work_root, LOCK)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise UserError(f"{self.work_root}: another study is running on this work folder (pid {holder}); "
                                    "wait for it to finish, or give this one another --work") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)

    def done(self, cell: Cell) -> bool:
        return self.result(cell) is not None

    def files_ready(self, cell: Cell) -> bool:
        return os.path.exists(os.path.join(self.work_dir(cell), DONE))

    # -- the plan
    def needed(self, targets: list[str] | None = None) -> list[Cell]:
        """Cells to run, in order: every cell not done, plus done cells whose files a cell to run needs."""
        self.check_targets(targets)
        order = list(self.cells.values())
        want = {c.name for c in order if (targets is None or c.name in targets) and not self.done(c)}
        for c in reversed(order):  # dependencies of a cell to run must have their files
            if c.name in want:
                for d in c.deps:
                    if not self.files_ready(self.cells[d]):
                        want.add(d)
        return [c for c in order if c.name in want]

    def plan_lines(self, targets: list[str] | None = None) -> list[str]:
        todo = {c.name for c in self.needed(targets)}
        rows, left = [], 0.0
        for c in self.cells.values():
            if c.name in todo:
                state = "redo files" if self.done(c) else "to run"
                left += c.estimate_s
            else:
                state = "done" if self.done(c) else "not now"  # not done, and not asked for (--only)
            rows.append(f"  {c.name:<44} {state:<10} ~{c.estimate_s / 3600:6.2f} h   key {c.key}")
        done = sum(self.done(c) for c in self.cells.values())
        rows.append(f"  {len(self.cells)} cells, {done} done, {len(todo)} to run, estimated {left / 3600:.1f} h")
        return rows

    # -- running
    def _prepare_work(self, cell: Cell) -> str:
        work = self.work_dir(cell)
        if os.path.isdir(work) and not self.files_ready(cell) and not cell.resumable:
            if os.path.exists(os.path.join(work, MARKER)):
                self.log(f"[study] {cell.name}: removing the unfinished work folder of an interrupted run ({work})")
                shutil.rmtree(work)
            else:
                raise RuntimeError(f"{work}: exists but was not written by the study (no {MARKER}); move it away")
        os.makedirs(work, exist_ok=True)
        open(os.path.join(work, MARKER), "w").close()
        return work

    def run_cell(self, cell: Cell) -> dict:
        work = self._prepare_work(cell)
        t0 = time.time()
        result = cell.run(Context(cell, work, self))
        wall = time.time() - t0
        open(os.path.join(work, DONE), "w").close()
        previous = self.result(cell)
        if previous is not None:  # only the files were recreated: keep the committed numbers and time
            return previous
        record = {"cell": cell.name, "key": cell.key, "settings": cell.settings, "deps": cell.deps,
                  "wall_s": round(wall, 1), "machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "result": result}
        atomic_write_json(self.result_path(cell), record)
        return record

    def run(self, targets: list[str] | None = None, on_done: Callable[[Cell, dict], Any] | None = None,
            jobs: int = 1) -> None:
        """Run the needed cells, up to ``jobs`` at a time (a cell starts when its dependencies are done). A
        failing cell stops new starts; the cells already running finish, then the error is raised. The work
        folder is locked throughout (a second study on it is refused)."""
        self.check_targets(targets)  # before the lock: a typo is told at once
        with self.locked():
            self._run(targets, on_done, jobs)

    def _run(self, targets, on_done, jobs) -> None:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        from tqdm import tqdm

        pending = {c.name: c for c in self.needed(targets)}
        bar = tqdm(total=len(pending), desc="study", unit="cell", dynamic_ncols=True)
        running: dict = {}
        failure: BaseException | None = None
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            while running or (pending and failure is None):
                blocked = set(pending) | {c.name for c in running.values()}
                ready = [c for c in pending.values() if not any(d in blocked for d in c.deps)]
                for cell in ready[:max(0, jobs - len(running))] if failure is None else []:
                    del pending[cell.name]
                    self.log(f"[study] === {cell.name} (key {cell.key}, ~{cell.estimate_s / 60:.1f} min)")
                    running[pool.submit(self.run_cell, cell)] = cell
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = running.pop(future)
                    try:
                        record = future.result()
                    except BaseException as e:  # noqa: BLE001 (re-raised below, after the running cells)
                        failure = failure or e
                        self.log(f"[study] {cell.name}: failed")
                        continue
                    self.log(f"[study] {cell.name}: done in {record['wall_s']:.0f} s")
                    bar.update(1)
                    bar.set_postfix_str(cell.name)
                    if on_done:
                        on_done(cell, record)
        bar.close()
        if failure is not None:
            raise failure
