"""`atria:PATH`: the 2018 Atrial Segmentation Challenge layout.

    PATH/[Training Set/]<case>/lgemri.nrrd    LGE-MRI volume
    PATH/[Training Set/]<case>/laendo.nrrd    left-atrium mask, 0/255 -> 0/1

(`mask.nrrd` is accepted in place of `laendo.nrrd`, as in the lecture of
`000_*.txt`.) Each volume is a case named by its folder (relative to PATH).
"""

from __future__ import annotations

import functools
from pathlib import Path

from jaxseg.data import folder
from jaxseg.data.cases import CaseRef, file_source
from jaxseg.errors import DataError

LABEL_NAMES = ("laendo.nrrd", "mask.nrrd")


def load(path, *, num_classes: int = 2) -> list:
  """Reads every case; returns the cases."""
  return [ref.read() for ref in list_cases(path, num_classes=num_classes)]


def list_cases(path, *, num_classes: int = 2) -> list[CaseRef]:
  """Every volume as a :class:`CaseRef`, not yet read."""
  root = Path(path)
  if not root.is_dir():
    raise DataError(f"{root}: no such directory (atria:PATH expects <case>/lgemri.nrrd)")
  volumes = sorted(root.rglob("lgemri.nrrd"))
  if not volumes:
    raise DataError(f"{root}: no <case>/lgemri.nrrd files found")
  cases = []
  for image_path in volumes:
    label_path = next((image_path.with_name(n) for n in LABEL_NAMES
                       if image_path.with_name(n).exists()), None)
    if label_path is None:
      raise DataError(f"{image_path}: image without a label (expected laendo.nrrd beside it)")
    case = str(image_path.parent.relative_to(root)) if image_path.parent != root else root.name
    cases.append(CaseRef(case, case, functools.partial(folder.read_case, image_path, label_path, num_classes, case),
                         file_source(image_path, label_path)))
  for label_path in sorted(p for n in LABEL_NAMES for p in root.rglob(n)):
    if not label_path.with_name("lgemri.nrrd").exists():
      raise DataError(f"{label_path}: label without an image (expected lgemri.nrrd beside it)")
  return cases
