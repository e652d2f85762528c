"""Report of the image OOD score: false refusals on in-domain test images, catches on other-modality images.

Uses the trained pipeline's own files (``make run``): the model (``models/diagnosis/train/<mode>``), its scaler,
calibration and image OOD score (``models/diagnosis/eval``), its input domain
(``data/processed/diagnosis/input_domain.json``). Each image goes the service's way, without HTTP:

- **in-domain**: every test-split study (the ingest array the model was evaluated on);
- **other modalities given a chest-radiograph header**: every DICOM image under ``--other`` folders (default: the
  ``pydicom-data`` package's files when installed, and ``../shared/data/breastmnist-export/dicom`` when present)
  whose own header puts it outside the model's input domain by what it shows (SOP class, modality, body part,
  colour: ``catches.OTHER_KIND``), so a real chest radiograph refused only for its size or pixel
  spacing is not counted as "other".
  Images equal in content to a calibration image (pydicom's bundled files, used to choose the threshold) are left
  out. Each is written under the header of a built-in chest radiograph (:func:`as_chest_radiograph`), passes the
  header gate, is decoded and normalised as the service does (``read_image``), and is scored by the predictor.

Prints counts per source and modality; exits 1 when the false-refusal share exceeds ``--max-false-refusal`` or
the catch share is under ``--min-catch``::

    python benchmarks/ood_catches.py
    python benchmarks/ood_catches.py --other /path/to/dicom/folder --max-images 2000
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from pipelines.evaluation.ood import ood_file
from pipelines.imaging.catches import calibration_index, shows_other_kind
from pipelines.imaging.dicom import read_dicom
from pipelines.imaging.domain import INPUT_DOMAIN_FILE, InputDomain
from pipelines.imaging.other_modality import (
    as_chest_radiograph,
    read_folder,
)
from pipelines.service.diagnosis_case import read_image
from pipelines.service.errors import FhirHTTPError
from pipelines.tracking.pyfunc_diagnosis import OUT_OF_DISTRIBUTION, load_predictor

ROOT = Path(__file__).resolve().parents[1]


def default_other_folders() -> list[Path]:
    """pydicom-data's files (when the package is installed) and the BreastMNIST export (when present)."""
    folders = []
    try:
        import data_store  # the pydicom-data package

        folders.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    breast = ROOT.parent / "shared" / "data" / "breastmnist-export" / "dicom"
    if breast.is_dir():
        folders.append(breast)
    return folders


def chest_template(raw: Path, domain: InputDomain) -> object:
    """The first built-in radiograph whose header is inside the model's input domain (its header is reused)."""
    for path in sorted((raw / "dicom").rglob("*.dcm")):
        try:
            ds = read_dicom(path)
        except Exception:  # defective files of the cohort are skipped
            continue
        if "PixelData" in ds and domain.check(ds) is None:
            return ds
    raise SystemExit(f"{raw}/dicom: no radiograph inside the model's input domain to take a header from")


def main() -> int:
    """Score the two sets and print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models" / "diagnosis")
    parser.add_argument("--processed", type=Path, default=ROOT / "data" / "processed" / "diagnosis")
    parser.add_argument("--raw", type=Path, default=ROOT / "data" / "raw")
    parser.add_argument("--mode", default="fused")
    parser.add_argument("--other", type=Path, action="append", help="folder of other-modality DICOM (repeatable)")
    parser.add_argument("--max-images", type=int, default=1000, help="other-modality images per folder, at most")
    parser.add_argument("--max-false-refusal", type=float, default=0.01)
    parser.add_argument("--min-catch", type=float, default=0.95)
    args = parser.parse_args()

    models, processed = args.models, args.processed
    predictor = load_predictor(
        models / "train" / args.mode,
        models / "train" / "features.json",
        models / "eval" / "calibration.json",
        input_domain_path=processed / INPUT_DOMAIN_FILE,
        image_ood_path=models / "eval" / ood_file(args.mode),
    )
    domain, ood = predictor.input_domain, predictor.image_ood
    if domain is None or ood is None:
        raise SystemExit("the model has no input domain or image OOD score")
    empty = {f: [None] for f in predictor.raw_features}

    test = pl.read_parquet(processed / "dataset.parquet").filter(pl.col("split") == "test")
    rows = pd.DataFrame({"image_path": test["image_path"].to_list(), **{f: None for f in predictor.raw_features}})
    refused = int(predictor.predict(rows)[OUT_OF_DISTRIBUTION].sum())
    print(
        f"threshold {ood.threshold:.1f} (chosen on {ood.summary['val']['n']} validation images and "
        f"{ood.summary['calibration']['n']} calibration images of other modalities)"
    )
    print(f"in-domain test images refused: {refused} of {test.height} ({refused / max(test.height, 1):.2%})")

    template = chest_template(args.raw, domain)
    size = int(np.load(test["image_path"][0], mmap_mode="r").shape[0])
    seen = calibration_index()
    caught_all = total_all = 0
    for folder in args.other or default_other_folders():
        counts: Counter[tuple[str, bool]] = Counter()
        images = read_folder(folder, seen=seen, keep=lambda ds: shows_other_kind(domain, ds))
        for k, image in enumerate(images):
            if k >= args.max_images:
                break
            data = as_chest_radiograph(template, image.pixels)  # type: ignore[arg-type]
            try:
                _, pixels = read_image(data, size, domain)
            except FhirHTTPError as exc:  # the disguise must pass the header gate; say so if it did not
                print(f"  {image.name}: refused before scoring ({exc.diagnostics})")
                counts[(image.modality, True)] += 1
                continue
            frame = pd.DataFrame({"image": [pixels], **empty})
            counts[(image.modality, bool(predictor.predict(frame)[OUT_OF_DISTRIBUTION].iat[0]))] += 1
        caught = sum(n for (_, hit), n in counts.items() if hit)
        total = sum(counts.values())
        caught_all, total_all = caught_all + caught, total_all + total
        print(f"{folder}: caught {caught} of {total}")
        for modality in sorted({m for m, _ in counts}):
            print(f"  {modality}: {counts[(modality, True)]} of {counts[(modality, True)] + counts[(modality, False)]}")
    share = caught_all / total_all if total_all else float("nan")
    print(f"other-modality images with a chest-radiograph header caught: {caught_all} of {total_all} ({share:.2%})")
    ok = refused / max(test.height, 1) <= args.max_false_refusal and (total_all == 0 or share >= args.min_catch)
    return 0 if ok else 1


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    sys.exit(main())
