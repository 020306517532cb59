"""STS evaluation: the SentEval protocol used by SimCSE and HPD, for any sentence encoder.

The seven unsupervised STS tasks of the HPD paper (STS12-16, STS-B test, SICK-R test) are scored as the Spearman
correlation between the cosine similarity of the two sentence embeddings and the gold score, x100:

* every sentence is split on whitespace and re-joined with single spaces before encoding;
* STS12-16: pairs whose gold line is blank are dropped, and the score is computed over **all subsets concatenated**
  (SimCSE's ``all``), not averaged over subsets;
* STS-B: the test split of ``sts-test.csv``; SICK-R: ``SICK_test_annotated.txt``;
* Avg is the mean of the seven numbers after rounding each to two decimals (as SimCSE prints it).

The protocol (:func:`evaluate`) takes any ``encode(list[str]) -> np.ndarray`` callable, so the NumPy engine and the
PyTorch reference run exactly the same code. Data is found in ``--data``, else ``$TINYHPD_SENTEVAL``, else SimCSE's
``senteval.tar`` is downloaded from the Hub dataset ``princeton-nlp/datasets-for-simcse`` and unpacked once into the
cache. Only numpy and the standard library are imported at module level.
"""
from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "TASKS",
    "DEV_TASK",
    "LABELS",
    "STS_SUBSETS",
    "SENTEVAL_REPO",
    "SENTEVAL_FILENAME",
    "ENV_DATA",
    "STSTask",
    "rankdata",
    "spearman",
    "cosine_pairs",
    "normalize_sentence",
    "load_task",
    "load_tasks",
    "resolve_data_dir",
    "download_senteval",
    "safe_extract",
    "score_task",
    "evaluate",
    "average",
    "format_table",
    
]

Encoder = Callable[[List[str]], np.ndarray]
Progress = Callable[[str, int, int], None]

# Task keys (as in SentEval / the --json output) in the paper's column order, and the column labels.
TASKS: Tuple[str, ...] = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")
LABELS: Dict[str, str] = {
    "STS12": "STS12", "STS13": "STS13", "STS14": "STS14", "STS15": "STS15", "STS16": "STS16",
    "STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R", "Avg": "Avg",
}

# SentEval's subset lists. STS13's SMT subset is licensed out of the public release: SentEval does not list it.
STS_SUBSETS: Dict[str, Tuple[str, ...]] = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}

# STS-B's dev split: what distillation runs are chosen by (the test columns above are only reported).
DEV_TASK = "STSBenchmark-dev"

SENTEVAL_REPO = "princeton-nlp/datasets-for-simcse"
SENTEVAL_FILENAME = "senteval.tar"
ENV_DATA = "TINYHPD_SENTEVAL"
_COMPLETE_MARKER = ".tinyhpd-complete"
# Only these top-level SentEval folders are unpacked from senteval.tar (the rest is transfer-task data).
_KEEP_DIRS = frozenset({"STS", "SICK"})


# --------------------------------------------------------------------------------------------------- statistics
def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, tied values sharing the average of their ranks (scipy's ``method="average"``)."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"rankdata expects a 1-D array, got shape {x.shape}")
    n = x.shape[0]
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start index of every run of equal values in sorted order, and the run each sorted position belongs to.
    new_run = np.empty(n, dtype=bool)
    if n:
        new_run[0] = True
        new_run[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], n)  # exclusive
    avg_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN if either input is constant."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman expects two 1-D arrays of the same length, got {a.shape} and {b.shape}")
    if a.size < 2 or np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    ra = rankdata(a)
    rb = rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt(np.dot(ra, ra) * np.dot(rb, rb))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(np.dot(ra, rb) / denom, -1.0, 1.0))


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays, computed in float64; a zero vector gives cosine 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"cosine_pairs expects two (n, d) arrays of the same shape, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    denom = na * nb
    dots = np.einsum("ij,ij->i", a, b)
    return np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)


# ------------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class STSTask:
    """The scored pairs of one task: normalized sentences and gold scores (float64), in file order."""

    name: str
    s1: Tuple[str, ...]
    s2: Tuple[str, ...]
    gold: np.ndarray

    def __len__(self) -> int:
        return len(self.gold)


def normalize_sentence(text: str) -> str:
    """SentEval's preprocessing: split on whitespace, join the tokens with one space."""
    return " ".join(text.split())


def _read_lines(path: Path, task: str) -> List[str]:
    """The lines of a UTF-8 text file, read the way SentEval reads them (universal newlines, ``splitlines``).

    The SentEval copies are valid UTF-8 (a few carry mojibake or C1 control characters, which SentEval keeps as they
    are, and so do we); a file that is not UTF-8 is not the SentEval data and is refused rather than guessed at.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{task}: data file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{task}: {path} is not UTF-8 (byte {exc.start}); use SentEval's copy of the data") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n").splitlines()


def _load_sts_year(name: str, root: Path) -> STSTask:
    folder = root / "STS" / f"{name}-en-test"
    s1: List[str] = []
    s2: List[str] = []
    gold: List[float] = []
    for subset in STS_SUBSETS[name]:
        in_path = folder / f"STS.input.{subset}.txt"
        gs_path = folder / f"STS.gs.{subset}.txt"
        pairs = _read_lines(in_path, name)
        scores = _read_lines(gs_path, name)
        if len(pairs) != len(scores):
            raise ValueError(f"{name}: {in_path} has {len(pairs)} lines but {gs_path} has {len(scores)}")
        for lineno, (pair, score) in enumerate(zip(pairs, scores), start=1):
            if not score.strip():
                continue  # unscored pair
            fields = pair.split("\t")
            if len(fields) < 2:
                raise ValueError(f"{name}: {in_path} line {lineno} has no tab-separated sentence pair")
            try:
                value = float(score)
            except ValueError as exc:
                raise ValueError(f"{name}: {gs_path} line {lineno} is not a score: {score!r}") from exc
            s1.append(normalize_sentence(fields[0]))
            s2.append(normalize_sentence(fields[1]))
            gold.append(value)
    return STSTask(name, tuple(s1), tuple(s2), np.asarray(gold, dtype=np.float64))


def _load_columns(name: str, path: Path, i1: int, i2: int, iscore: int, header: bool) -> STSTask:
    """A tab-separated file with sentence columns i1, i2 and gold column iscore (STS-B and SICK layouts)."""
    lines = _read_lines(path, name)
    if header:
        lines = lines[1:]
    s1: List[str] = []
    s2: List[str] = []
    gold: List[float] = []
    need = max(i1, i2, iscore) + 1
    for lineno, line in enumerate(lines, start=2 if header else 1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) < need:
            raise ValueError(f"{name}: {path} line {lineno} has {len(fields)} columns, expected at least {need}")
        try:
            value = float(fields[iscore])
        except ValueError as exc:
            raise ValueError(f"{name}: {path} line {lineno}: not a score: {fields[iscore]!r}") from exc
        s1.append(normalize_sentence(fields[i1]))
        s2.append(normalize_sentence(fields[i2]))
        gold.append(value)
    return STSTask(name, tuple(s1), tuple(s2), np.asarray(gold, dtype=np.float64))


def load_task(name: str, data_dir: Union[str, os.PathLike]) -> STSTask:
    """Load one task's scored test pairs from a SentEval data folder (the one holding ``STS/`` and ``SICK/``)."""
    root = Path(data_dir)
    if name in STS_SUBSETS:
        return _load_sts_year(name, root)
    if name == "STSBenchmark":  # genre, file, year, id, score, s1, s2
        return _load_columns(name, root / "STS" / "STSBenchmark" / "sts-test.csv", 5, 6, 4, header=False)
    if name == "SICKRelatedness":  # pair_ID, sentence_A, sentence_B, relatedness_score, entailment_judgment
        return _load_columns(name, root / "SICK" / "SICK_test_annotated.txt", 1, 2, 3, header=True)
    if name == DEV_TASK:  # model selection only: never part of the reported average
        return _load_columns(name, root / "STS" / "STSBenchmark" / "sts-dev.csv", 5, 6, 4, header=False)
    raise ValueError(f"unknown STS task {name!r}; expected one of {', '.join(TASKS)} (or {DEV_TASK})")


def load_tasks(data_dir: Union[str, os.PathLike], tasks: Iterable[str] = TASKS) -> List[STSTask]:
    """Load several tasks (all seven by default), in the order given."""
    return [load_task(name, data_dir) for name in tasks]


# --------------------------------------------------------------------------------------------- data location
def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tinyhpd"


def _find_root(folder: Path) -> Optional[Path]:
    """The folder holding ``STS/`` in ``folder`` or up to two levels below it (e.g. SentEval's ``data/downstream``)."""
    candidates = [folder, folder / "downstream", folder / "data" / "downstream"]
    for sub in sorted(p for p in folder.glob("*") if p.is_dir()):
        candidates += [sub, *sorted(p for p in sub.glob("*") if p.is_dir())]
    for cand in candidates:
        if (cand / "STS").is_dir():
            return cand
    return None


def _check_member_name(name: str) -> PurePosixPath:
    """The relative path of a tar member, refusing absolute paths and ``..`` components."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(name).drive or ".." in posix.parts:
        raise ValueError(f"refusing to unpack unsafe archive member {name!r} (absolute path or '..')")
    return posix


def safe_extract(tar_path: Union[str, os.PathLike], dest: Union[str, os.PathLike],
                 keep: Optional[Callable[[PurePosixPath], bool]] = None) -> int:
    """Unpack the regular files of a tar archive into ``dest``; returns how many files were written.

    Every member name is checked first: an absolute path or a ``..`` component refuses the whole archive (ValueError,
    nothing written). Links, devices and other special members are never created; file modes are not restored.
    ``keep(relative_path)`` selects which files to write (default: all).
    """
    dest = Path(dest)
    dest_resolved = dest.resolve()
    written = 0
    with tarfile.open(tar_path, "r:*") as tar:
        members = tar.getmembers()
        checked = [(m, _check_member_name(m.name)) for m in members]
        for member, rel in checked:
            if not member.isfile() or not rel.parts or rel.parts == (".",):
                continue
            if keep is not None and not keep(rel):
                continue
            target = dest.joinpath(*[p for p in rel.parts if p != "."])
            if not target.resolve().is_relative_to(dest_resolved):
                raise ValueError(f"refusing to unpack archive member {member.name!r} outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            if src is None:  # pragma: no cover - isfile() members always have data
                continue
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            written += 1
    return written


def _keep_sts(rel: PurePosixPath) -> bool:
    return any(part in _KEEP_DIRS for part in rel.parts)


def download_senteval(cache_dir: Union[str, os.PathLike, None] = None, *, revision: Optional[str] = None) -> Path:
    """SimCSE's ``senteval.tar`` from the Hub, unpacked once into ``<cache>/senteval``; returns the data folder.

    A completed unpack is reused without touching the network. Only the STS and SICK folders are unpacked.
    """
    base = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    final = base / "senteval"
    if (final / _COMPLETE_MARKER).is_file():
        root = _find_root(final)
        if root is not None:
            return root
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - huggingface-hub is a dependency
        raise RuntimeError("downloading the STS data needs huggingface-hub (pip install huggingface-hub); "
                           f"or pass --data DIR / set {ENV_DATA}") from exc
    try:
        tar_path = hf_hub_download(repo_id=SENTEVAL_REPO, filename=SENTEVAL_FILENAME, repo_type="dataset",
                                   revision=revision)
    except Exception as exc:  # network, auth, missing file: one actionable message
        raise RuntimeError(f"could not download {SENTEVAL_FILENAME} from the Hub dataset {SENTEVAL_REPO} ({exc}); "
                           f"pass --data DIR or set {ENV_DATA} to a SentEval data folder") from exc
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".senteval-", dir=base))
    try:
        safe_extract(tar_path, tmp, keep=_keep_sts)
        if _find_root(tmp) is None:
            raise ValueError(f"{tar_path} holds no STS/ folder: not SimCSE's senteval.tar")
        (tmp / _COMPLETE_MARKER).write_text(f"{SENTEVAL_REPO}/{SENTEVAL_FILENAME}\n")
        if final.exists():
            shutil.rmtree(final)  # an interrupted earlier unpack
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / _COMPLETE_MARKER).is_file():  # another process won the race: use its copy
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    root = _find_root(final)
    assert root is not None
    return root


def resolve_data_dir(data: Union[str, os.PathLike, None] = None, *,
                     cache_dir: Union[str, os.PathLike, None] = None) -> Path:
    """The SentEval data folder: ``data`` if given, else ``$TINYHPD_SENTEVAL``, else the downloaded copy."""
    for given, origin in ((data, "--data"), (os.environ.get(ENV_DATA) or None, ENV_DATA)):
        if given is None:
            continue
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"SentEval data folder not found: {folder} (from {origin})")
        return _find_root(folder) or folder  # a missing task file is reported, with its path, when loading
    return download_senteval(cache_dir)


# ---------------------------------------------------------------------------------------------------- protocol
def _encode_unique(encode: Encoder, sentences: List[str], name: str, chunk_size: int,
                   progress: Optional[Progress]) -> np.ndarray:
    """Embeddings of ``sentences`` (already unique), encoded in length-sorted chunks; rows in input order."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out: Optional[np.ndarray] = None
    done = 0
    if progress:
        progress(name, 0, len(sentences))
    for start in range(0, len(order), chunk_size):
        idx = order[start:start + chunk_size]
        emb = np.asarray(encode([sentences[i] for i in idx]))
        if emb.ndim != 2 or emb.shape[0] != len(idx):
            raise ValueError(f"{name}: the encoder returned shape {emb.shape} for {len(idx)} sentences")
        if out is None:
            out = np.empty((len(sentences), emb.shape[1]), dtype=emb.dtype)
        out[idx] = emb
        done += len(idx)
        if progress:
            progress(name, done, len(sentences))
    if out is None:
        raise ValueError(f"{name}: no sentences to encode")
    return out


def score_task(encode: Encoder, task: STSTask, *, chunk_size: int = 512,
               progress: Optional[Progress] = None) -> float:
    """Spearman x100 of cosine(encode(s1), encode(s2)) vs gold; each distinct sentence is encoded once.

    A pair of identical sentences (79 in STS12) has cosine exactly 1: both sides are the same embedding, and float
    rounding of cos(x, x) would otherwise break these ties in an arbitrary, engine-dependent order.
    """
    unique = list(dict.fromkeys(task.s1 + task.s2))
    row = {s: i for i, s in enumerate(unique)}
    emb = _encode_unique(encode, unique, task.name, chunk_size, progress)
    i1 = np.fromiter((row[s] for s in task.s1), dtype=np.int64, count=len(task.s1))
    i2 = np.fromiter((row[s] for s in task.s2), dtype=np.int64, count=len(task.s2))
    cos = cosine_pairs(emb[i1], emb[i2])
    cos[i1 == i2] = 1.0
    return 100.0 * spearman(cos, task.gold)


def average(scores: Mapping[str, float]) -> float:
    """SimCSE's Avg: the mean of the task scores (x100) after rounding each to two decimals."""
    values = [round(float(scores[t]), 2) for t in TASKS if t in scores]
    if not values:
        raise ValueError("no task scores to average")
    return float(np.mean(values))


def evaluate(encode: Encoder, data_dir: Union[str, os.PathLike, None] = None, *, tasks: Iterable[str] = TASKS,
             chunk_size: int = 512, progress: Optional[Progress] = None) -> Dict[str, float]:
    """Run the protocol: ``{task: Spearman x100 (unrounded)}`` for each task, plus ``"Avg"``.

    ``encode(list[str]) -> (n, d) array`` may be any encoder (tinyhpd, sentence-transformers, ...).
    ``data_dir`` defaults to :func:`resolve_data_dir`'s choice.
    """
    root = resolve_data_dir(data_dir)
    scores: Dict[str, float] = {}
    for name in tasks:
        scores[name] = score_task(encode, load_task(name, root), chunk_size=chunk_size, progress=progress)
    scores["Avg"] = average(scores)
    return scores


# -------------------------------------------------------------------------------------------------------- CLI
def _columns(scores: Mapping[str, float]) -> List[str]:
    return [t for t in (*TASKS, "Avg") if t in scores]


def format_table(rows: Sequence[Tuple[str, Mapping[str, float]]], *, diff: bool = False) -> str:
    """A plain-text table, paper column order, two decimals; with ``diff`` a third row: first minus second."""
    cols = _columns(rows[0][1])
    width = max(8, *(len(LABELS[c]) + 1 for c in cols))
    label_w = max(10, *(len(r[0]) + 2 for r in rows))
    lines = [" " * label_w + "".join(LABELS[c].rjust(width) for c in cols)]
    for label, scores in rows:
        lines.append(label.ljust(label_w) + "".join(f"{scores[c]:.2f}".rjust(width) for c in cols))
    if diff and len(rows) >= 2:
        a, b = rows[0][1], rows[1][1]
        lines.append("difference".ljust(label_w) + "".join(f"{a[c] - b[c]:+.4f}".rjust(width) for c in cols))
        worst = max(cols, key=lambda c: abs(a[c] - b[c]))
        lines.append(f"largest |difference|: {abs(a[worst] - b[worst]):.2g} ({LABELS[worst]}, unrounded, x100)")
    return "\n".join(lines)


def rounded(scores: Mapping[str, float]) -> Dict[str, float]:
    return {c: round(float(scores[c]), 2) for c in _columns(scores)}


class StderrProgress:
    """Per-task progress on stderr: a rewritten line on a terminal, one line per task otherwise."""

    def __init__(self, engine: str, stream=None) -> None:
        self.engine = engine
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()

    def __call__(self, task: str, done: int, total: int) -> None:
        if done == 0:
            self.t0 = time.perf_counter()
        msg = f"[{self.engine}] {LABELS.get(task, task)}: {done}/{total} sentences"
        if done == total:
            msg += f" ({time.perf_counter() - self.t0:.1f} s)"
        if self.tty:
            self.stream.write("\r" + msg + ("\n" if done == total else ""))
        elif done == total:
            self.stream.write(msg + "\n")
        self.stream.flush()


def tinyhpd_encoder(model, batch_size: int) -> Tuple[Encoder, str, Optional[str], str]:
    """(encode, name_or_path, revision, description) for the NumPy engine; `model` is a Model, a folder or a Hub id."""
    import tinyhpd

    m = model if isinstance(model, tinyhpd.Model) else tinyhpd.load(model)

    def encode(sentences: List[str]) -> np.ndarray:
        return m.encode(sentences, batch_size=batch_size, show_progress_bar=False)

    return encode, m.name_or_path, m.revision, f"{m.name_or_path} (dim {m.embedding_dim})"


def torch_encoder(name_or_path: str, revision: Optional[str], batch_size: int) -> Encoder:
    """The PyTorch sentence-transformers reference on the same model, on the CPU."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise RuntimeError("--reference torch needs PyTorch sentence-transformers: "
                           "pip install torch==2.13.0 sentence-transformers") from exc
    kwargs = {"revision": revision} if revision else {}
    st = SentenceTransformer(str(name_or_path), device="cpu", **kwargs)

    def encode(sentences: List[str]) -> np.ndarray:
        return st.encode(sentences, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

    return encode
