"""`acdc:PATH`: the ACDC challenge layout (MICCAI 2017).

    PATH/[training/]patientNNN/patientNNN_frameMM.nii.gz
    PATH/[training/]patientNNN/patientNNN_frameMM_gt.nii.gz

Labels: 0 background, 1 RV, 2 myocardium, 3 LV cavity. ``classes`` chooses
which structures become classes 1..k (in the given order, everything else 0);
the default ``("lv",)`` gives the binary LV task of the DLI lab; ``"all"``
keeps 0-3 (needs num_classes=4). Each frame is a case named by its file stem
(``patient001_frame01``) in the group of its patient, so held-out splits
keep a patient's frames together.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from jaxseg.data import folder
from jaxseg.data.cases import CaseRef, file_source
from jaxseg.errors import DataError

STRUCTURES = {"rv": 1, "myo": 2, "lv": 3}
_FRAME = re.compile(r"^(patient\d+)_frame\d+\.nii(\.gz)?$")


def parse_classes(text: str | tuple | list) -> tuple[str, ...] | str:
  """'lv' / 'rv,myo,lv' / 'all' -> ('lv',) / ('rv','myo','lv') / 'all'."""
  if isinstance(text, str):
    if text.strip().lower() == "all":
      return "all"
    names = tuple(t.strip().lower() for t in text.split(",") if t.strip())
  else:
    names = tuple(str(t).lower() for t in text)
  bad = [n for n in names if n not in STRUCTURES]
  if bad or not names or len(set(names)) != len(names):
    raise DataError(f"acdc classes {text!r}: expected 'all' or distinct names from "
                    f"{sorted(STRUCTURES)} separated by commas")
  return names


def map_classes(labels: np.ndarray, classes) -> np.ndarray:
  """ACDC labels 0-3 -> the chosen classes 1..k (others 0)."""
  if classes == "all":
    return labels
  out = np.zeros_like(labels)
  for k, name in enumerate(classes, start=1):
    out[labels == STRUCTURES[name]] = k
  return out


def _read_frame(image_path, label_path, classes, stem, group):
  # ACDC labels are 0..3 whatever the chosen classes; check against 4 first.
  case = folder.read_case(image_path, label_path, 4, stem, group)
  return case.replace(label=map_classes(case.label, classes))


def load(path, *, num_classes: int = 2, classes="lv") -> list:
  """Reads every patient's frames; returns the cases."""
  return [ref.read() for ref in list_cases(path, num_classes=num_classes, classes=classes)]


def list_cases(path, *, num_classes: int = 2, classes="lv") -> list[CaseRef]:
  """Every frame as a :class:`CaseRef` (in the group of its patient), not yet read."""
  classes = parse_classes(classes)
  root = Path(path)
  if not root.is_dir():
    raise DataError(f"{root}: no such directory (acdc:PATH expects patientNNN/ folders)")
  frames = sorted(p for p in root.rglob("patient*_frame*.nii*") if _FRAME.match(p.name))
  if not frames:
    raise DataError(f"{root}: no patientNNN_frameMM.nii.gz files found")
  gts = {p for p in root.rglob("patient*_frame*_gt.nii*")}
  k = 4 if classes == "all" else len(classes) + 1
  if k > num_classes:
    raise DataError(f"{root}: acdc classes {classes} need num_classes >= {k}, got {num_classes}")
  cases = []
  for image_path in frames:
    name = image_path.name
    stem = name[:name.index(".nii")]
    label_path = image_path.with_name(stem + "_gt" + name[len(stem):])
    if not label_path.exists():
      raise DataError(f"{image_path}: image without a label (expected {label_path.name})")
    gts.discard(label_path)
    group = _FRAME.match(name).group(1)
    cases.append(CaseRef(stem, group, functools.partial(_read_frame, image_path, label_path, classes, stem, group),
                         file_source(image_path, label_path) + f"|classes={classes}"))
  if gts:
    orphan = sorted(gts)[0]
    raise DataError(f"{orphan}: label without an image")
  return cases
