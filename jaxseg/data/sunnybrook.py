"""`sunnybrook:PATH`: Sunnybrook Cardiac Data (2009 LV challenge), as in the DLI lab.

Layout (as downloaded; folder names above these are free):

    PATH/.../challenge_training/SC-HF-I-1/IM-0004-0048.dcm      DICOM slices
    PATH/.../TrainingDataContours/SC-HF-I-01/contours-manual/IRCCI-expert/
        IM-0001-0048-icontour-manual.txt                      "x y" per line, pixels

Each i-contour (LV endocardium; everything inside it, papillary muscles
included, counts as LV) is filled into a binary mask and paired with image number NNNN of the
case's short-axis (SAX) series, given by :data:`SAX_SERIES` (the challenge
mapping used by the Kaggle/NVIDIA tutorials). For a case missing from the
mapping the one series with an ``IM-*-NNNN.dcm`` file is used. Each contoured
frame is a 2-D case named ``<patient>_<DICOM stem>`` in the group of its
patient; the default normalisation divides by 1024, as the lab does. DICOM
frames without a contour are skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from jaxseg.data import io, validate
from jaxseg.data.cases import Case
from jaxseg.errors import DataError

# Case -> DICOM series number of its short-axis cine stack.
SAX_SERIES = {
    # challenge training
    "SC-HF-I-1": "0004", "SC-HF-I-2": "0106", "SC-HF-I-4": "0116",
    "SC-HF-I-40": "0134", "SC-HF-NI-3": "0379", "SC-HF-NI-4": "0501",
    "SC-HF-NI-34": "0446", "SC-HF-NI-36": "0474", "SC-HYP-1": "0550",
    "SC-HYP-3": "0650", "SC-HYP-38": "0734", "SC-HYP-40": "0755",
    "SC-N-2": "0898", "SC-N-3": "0915", "SC-N-40": "0944",
    # challenge validation
    "SC-HF-I-5": "0156", "SC-HF-I-6": "0180", "SC-HF-I-7": "0209",
    "SC-HF-I-8": "0226", "SC-HF-NI-7": "0523", "SC-HF-NI-11": "0270",
    "SC-HF-NI-31": "0401", "SC-HF-NI-33": "0424", "SC-HYP-6": "0767",
    "SC-HYP-7": "0007", "SC-HYP-8": "0796", "SC-HYP-37": "0702",
    "SC-N-5": "0963", "SC-N-6": "0981", "SC-N-7": "1009",
}

_CONTOUR = re.compile(r"^IM-\d+-(\d{4})-icontour-manual\.txt$")


def shrink_case(case: str) -> str:
  """'SC-HF-I-01' -> 'SC-HF-I-1': contour folders zero-pad, image folders do not."""
  return "-".join(str(int(t)) if t.isdigit() else t for t in case.split("-"))


def read_contour(path) -> np.ndarray:
  """(P, 2) float array of "x y" pixel coordinates, or DataError."""
  try:
    text = Path(path).read_text(encoding="ascii")
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: cannot read contour ({e})") from None
  points = []
  for n, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    parts = line.split()
    try:
      if len(parts) != 2:
        raise ValueError
      points.append((float(parts[0]), float(parts[1])))
    except ValueError:
      raise DataError(f"{path}:{n}: expected 'x y' pixel coordinates, got {line.strip()[:40]!r}") from None
  pts = np.asarray(points, np.float64).reshape(-1, 2)
  if len(pts) < 3:
    raise DataError(f"{path}: contour has {len(pts)} points, need at least 3")
  if not np.all(np.isfinite(pts)):
    raise DataError(f"{path}: contour has non-finite coordinates")
  return pts


def fill_polygon(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Even-odd fill: pixel (row r, col c) is inside if its centre (x=c, y=r) is.

  A scanline per row: the edges crossing y=r (half-open in y, so a vertex is
  counted once) give x-intersections; a pixel is inside when an odd number of
  them lie to its right. Returns a uint8 (H, W) mask.
  """
  h, w = shape
  x0, y0 = points[:, 0], points[:, 1]
  x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
  rows = np.arange(h, dtype=np.float64)[:, None]                      # (H, 1)
  crosses = ((y0 <= rows) & (rows < y1)) | ((y1 <= rows) & (rows < y0))  # (H, E)
  dy = np.where(y1 != y0, y1 - y0, 1.0)
  xs = np.where(crosses, x0 + (rows - y0) * (x1 - x0) / dy, -np.inf)
  xs.sort(axis=1)
  cols = np.arange(w, dtype=np.float64)
  mask = np.zeros(shape, np.uint8)
  for r in np.nonzero(crosses.any(axis=1))[0]:
    right = xs.shape[1] - np.searchsorted(xs[r], cols, side="right")
    mask[r] = right % 2
  return mask


def _image_dirs(root: Path) -> dict[str, Path]:
  dirs = {}
  for dirpath, _, files in os.walk(root):
    if any(f.lower().endswith(".dcm") for f in files):
      case = shrink_case(Path(dirpath).name)
      if case in dirs:
        raise DataError(f"{dirpath}: second DICOM folder for case {case} (first: {dirs[case]})")
      dirs[case] = Path(dirpath)
  return dirs


def _contour_case(path: Path) -> str:
  parts = path.parts
  if "contours-manual" in parts:
    return shrink_case(parts[len(parts) - 1 - parts[::-1].index("contours-manual") - 1])
  return shrink_case(path.parent.name)


def _find_dicom(image_dir: Path, case: str, number: int, contour: Path) -> Path:
  series = SAX_SERIES.get(case)
  if series is not None:
    dcm = image_dir / f"IM-{series}-{number:04d}.dcm"
    if not dcm.exists():
      raise DataError(f"{contour}: label without an image (expected {dcm})")
    return dcm
  found = sorted(image_dir.glob(f"IM-*-{number:04d}.dcm"))
  if len(found) != 1:
    raise DataError(f"{contour}: case {case} is not in the SAX series mapping and "
                    f"{len(found)} files IM-*-{number:04d}.dcm match in {image_dir}")
  return found[0]


def load(path, *, num_classes: int = 2) -> list[Case]:
  """Every i-contour with its DICOM slice; returns the 2-D cases."""
  root = Path(path)
  if not root.is_dir():
    raise DataError(f"{root}: no such directory (sunnybrook:PATH expects DICOM and contour folders)")
  contours = sorted(p for p in root.rglob("*-icontour-manual.txt") if _CONTOUR.match(p.name))
  if not contours:
    raise DataError(f"{root}: no IM-0001-NNNN-icontour-manual.txt contour files found")
  image_dirs = _image_dirs(root)
  cases = []
  for contour in contours:
    case = _contour_case(contour)
    if case not in image_dirs:
      raise DataError(f"{contour}: label without an image (no DICOM folder for case {case})")
    dcm = _find_dicom(image_dirs[case], case, int(_CONTOUR.match(contour.name).group(1)), contour)
    array, geometry = io.read_image(dcm)
    images = validate.image_slices(array, dcm)
    if images.shape[0] != 1:
      raise DataError(f"{dcm}: expected one 2-D slice, got {images.shape[0]}")
    mask = fill_polygon(read_contour(contour), images.shape[1:3])
    labels = validate.check_labels(mask[None], contour, num_classes)
    spacing = tuple(float(s) for s in reversed(geometry.spacing[:2]))
    cases.append(Case(f"{case}_{dcm.stem}", images[0], labels[0], spacing, case))
  return cases
