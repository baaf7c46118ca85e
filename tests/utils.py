"""Helpers shared by the test modules."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from fcn_jax.data.base import IGNORE_LABEL
from fcn_jax.resources import voc_class_names, voc_palette

REPO = Path(__file__).resolve().parents[1]
NARROW = 0.125  # width of the cheap networks used everywhere but the full-width parity module
# The metric keys of eval.py's JSON (per metric set); the run adds n_images, seconds, ...
METRIC_KEYS = frozenset({
    "pixel_acc", "mean_acc", "mean_iou", "fw_iou", "per_class_iou", "per_class_dice",
    "per_class_precision", "per_class_recall", "confusion_matrix",
})  # fmt: skip
# SIFT Flow's 33 semantic classes, written out independently of the shipped list.
SIFTFLOW_SEMANTIC = [
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole",
    "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase",
    "streetlight", "sun", "tree", "window",
]  # fmt: skip


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB noise."""
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95, subsampling=0)


def write_palette_png(path: Path, label: np.ndarray) -> None:
    """A VOC SegmentationClass PNG: mode 'P', values = indices, coloured by VOC's palette."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = label.shape
    im = Image.frombytes("P", (width, height), label.tobytes())
    im.putpalette(voc_palette().ravel().tolist())
    im.save(path)


def write_sbd_mat(path: Path, label: np.ndarray) -> None:
    """An SBD cls/<id>.mat: struct GTcls with Segmentation, Boundaries (cell), CategoriesPresent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    boundaries = np.empty((len(voc_class_names()) - 1, 1), dtype=object)
    for k in range(boundaries.shape[0]):
        boundaries[k, 0] = scipy.sparse.csc_matrix(label.shape, dtype=np.float64)
    present = np.unique(label[(label > 0) & (label != IGNORE_LABEL)]).astype(np.uint8)[:, None]
    scipy.io.savemat(
        path,
        {"GTcls": {"Segmentation": label, "Boundaries": boundaries, "CategoriesPresent": present}},
    )


def write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def write_voc_tree(
    root: Path, sizes: dict[str, tuple[int, int]], split: str = "seg11valid", seed: int = 0
) -> dict[str, np.ndarray]:
    """A VOC2012 devkit under ``root`` with noise images and random-blob labels for ``sizes``.

    Writes ``ImageSets/Segmentation/<split>.txt`` listing the ids; returns id -> label.
    """
    rng = np.random.default_rng(seed)
    devkit = root / "VOCdevkit" / "VOC2012"
    labels = {}
    for sample_id, (h, w) in sizes.items():
        write_jpeg(devkit / "JPEGImages" / f"{sample_id}.jpg", random_image(rng, h, w))
        label = rng.integers(0, 21, (h, w), dtype=np.uint8)
        label[rng.random((h, w)) < 0.1] = IGNORE_LABEL
        write_palette_png(devkit / "SegmentationClass" / f"{sample_id}.png", label)
        labels[sample_id] = label
    write_list(devkit / "ImageSets" / "Segmentation" / f"{split}.txt", list(sizes))
    return labels


def write_sbd_tree(
    root: Path, sizes: dict[str, tuple[int, int]], split: str = "val", seed: int = 0
) -> dict[str, np.ndarray]:
    """An SBD ``benchmark_RELEASE/dataset`` under ``root``: JPEGs, GTcls .mat labels, a list."""
    rng = np.random.default_rng(seed)
    dataset = root / "benchmark_RELEASE" / "dataset"
    labels = {}
    for sample_id, (h, w) in sizes.items():
        write_jpeg(dataset / "img" / f"{sample_id}.jpg", random_image(rng, h, w))
        labels[sample_id] = rng.integers(0, 21, (h, w), dtype=np.uint8)
        write_sbd_mat(dataset / "cls" / f"{sample_id}.mat", labels[sample_id])
    write_list(dataset / f"{split}.txt", list(sizes))
    return labels


def write_png(path: Path, image: np.ndarray) -> None:
    """A lossless PNG: [H, W, 3] uint8 as RGB (NYUDv2 images, HHA), [H, W] uint8 as greyscale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")


def write_mat(path: Path, variables: dict) -> None:
    """A MATLAB v5 .mat (as NYUDv2, SIFT Flow and PASCAL-Context ship) holding ``variables``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, variables)


# --- colour-coded labels (CamVid) and users' own folders -----------------------------------------

# Kaggle CamVid's class_dict.csv, row for row: 32 rows, Void second to last (so Wall is class 30).
CAMVID_CLASS_DICT = (
    ("Animal", (64, 128, 64)),
    ("Archway", (192, 0, 128)),
    ("Bicyclist", (0, 128, 192)),
    ("Bridge", (0, 128, 64)),
    ("Building", (128, 0, 0)),
    ("Car", (64, 0, 128)),
    ("CartLuggagePram", (64, 0, 192)),
    ("Child", (192, 128, 64)),
    ("Column_Pole", (192, 192, 128)),
    ("Fence", (64, 64, 128)),
    ("LaneMkgsDriv", (128, 0, 192)),
    ("LaneMkgsNonDriv", (192, 0, 64)),
    ("Misc_Text", (128, 128, 64)),
    ("MotorcycleScooter", (192, 0, 192)),
    ("OtherMoving", (128, 64, 64)),
    ("ParkingBlock", (64, 192, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Road", (128, 64, 128)),
    ("RoadShoulder", (128, 128, 192)),
    ("Sidewalk", (0, 0, 192)),
    ("SignSymbol", (192, 128, 128)),
    ("Sky", (128, 128, 128)),
    ("SUVPickupTruck", (64, 128, 192)),
    ("TrafficCone", (0, 0, 64)),
    ("TrafficLight", (0, 64, 64)),
    ("Train", (192, 64, 128)),
    ("Tree", (128, 128, 0)),
    ("Truck_Bus", (192, 128, 192)),
    ("Tunnel", (64, 0, 64)),
    ("VegetationMisc", (192, 192, 0)),
    ("Void", (0, 0, 0)),
    ("Wall", (64, 192, 0)),
)
# The 11-class CamVid class_dict.csv with its void row last (the seed's; SpeedPaper's 12 classes).
CAMVID11 = (
    ("Sky", (128, 128, 128)),
    ("Building", (128, 0, 0)),
    ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)),
    ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)),
    ("Fence", (64, 64, 128)),
    ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Bicyclist", (0, 128, 192)),
    ("Void", (0, 0, 0)),
)
VOID_ROW_NAMES = ("void", "unlabelled", "unlabeled")


def write_class_dict(path: Path, rows=CAMVID_CLASS_DICT, header: str = "name,r,g,b") -> None:
    """A class_dict.csv as Kaggle ships it: ``name,r,g,b`` then one ``Name,r,g,b`` row each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header] + [f"{name},{r},{g},{b}" for name, (r, g, b) in rows]
    path.write_text("\n".join(lines) + "\n")


def class_rows_colours(rows=CAMVID_CLASS_DICT) -> tuple[np.ndarray, np.ndarray]:
    """([n_class, 3] class colours, [n_void, 3] void colours) of class_dict rows, csv order."""
    classes = [c for n, c in rows if n.lower() not in VOID_ROW_NAMES]
    voids = [c for n, c in rows if n.lower() in VOID_ROW_NAMES]
    return np.array(classes, np.uint8).reshape(-1, 3), np.array(voids, np.uint8).reshape(-1, 3)


def colourise(label: np.ndarray, rows=CAMVID_CLASS_DICT) -> np.ndarray:
    """[H, W] indices (255 = void) -> [H, W, 3] uint8 colours of the csv (void: first void row)."""
    classes, voids = class_rows_colours(rows)
    table = np.zeros((256, 3), np.uint8)
    table[: len(classes)] = classes
    if len(voids):
        table[IGNORE_LABEL] = voids[0]
    return table[label]


def random_label(rng: np.random.Generator, height: int, width: int, n_class: int) -> np.ndarray:
    """[H, W] uint8 blocks of random classes in [0, n_class) with a void (255) corner."""
    label = rng.integers(0, n_class, (height // 4 + 1, width // 4 + 1), dtype=np.uint8)
    label = np.repeat(np.repeat(label, 4, 0), 4, 1)[:height, :width].copy()
    label[:2, :3] = IGNORE_LABEL
    return label


def write_camvid_tree(
    root: Path,
    splits: dict[str, dict[str, tuple[int, int]]],
    rows=CAMVID_CLASS_DICT,
    label_suffix: str = "_L",
    image_ext: str = ".png",
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A CamVid root: class_dict.csv, ``<split>/<stem><image_ext>``, colour labels in
    ``<split>_labels/<stem><label_suffix>.png``. Returns stem -> (image, index label)."""
    rng = np.random.default_rng(seed)
    n_class = len(class_rows_colours(rows)[0])
    write_class_dict(root / "class_dict.csv", rows)
    written = {}
    for split, sizes in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}_labels").mkdir(parents=True, exist_ok=True)
        for stem, (h, w) in sizes.items():
            image, label = random_image(rng, h, w), random_label(rng, h, w, n_class)
            if image_ext == ".png":
                write_png(root / split / f"{stem}.png", image)
            else:
                write_jpeg(root / split / f"{stem}{image_ext}", image)
            write_png(
                root / f"{split}_labels" / f"{stem}{label_suffix}.png", colourise(label, rows)
            )
            written[stem] = (image, label)
    return written


def write_mask_tree(
    root: Path,
    splits: dict[str, dict[str, tuple[int, int]]],
    n_class: int,
    image_ext: str = ".jpg",
    classes: list[str] | None = None,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A users' folder: ``images/<split>/<stem><image_ext>``, greyscale index masks in
    ``masks/<split>/<stem>.png``, ``classes.txt`` if ``classes``. Returns stem -> (image, mask)."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, sizes in splits.items():
        for stem, (h, w) in sizes.items():
            image, label = random_image(rng, h, w), random_label(rng, h, w, n_class)
            if image_ext == ".png":
                write_png(root / "images" / split / f"{stem}.png", image)
            else:
                write_jpeg(root / "images" / split / f"{stem}{image_ext}", image)
            write_png(root / "masks" / split / f"{stem}.png", label)
            written[stem] = (image, label)
    if classes is not None:
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return written


# --- NYUDv2, SIFT Flow and PASCAL-Context trees, as the releases ship them -----------------------


def write_nyud_tree(
    root: Path,
    splits: dict[str, dict[str, tuple[int, int]]],
    hha: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A NYUDv2 root: ``data/images/img_<id>.png`` (RGB), ``data/hha/img_<id>.png`` (3-channel
    HHA, unless ``hha`` is false), ``segmentation/img_<id>.mat`` (variable ``segmentation``,
    uint8 0 = void, 1..40) and a ``<split>.txt`` of ids per split.

    Returns id -> the segmentation values as written (0..40, every map holding some 0s).
    """
    rng = np.random.default_rng(seed)
    written = {}
    for split, sizes in splits.items():
        for sample_id, (h, w) in sizes.items():
            stem = f"img_{sample_id}"
            write_png(root / "data" / "images" / f"{stem}.png", random_image(rng, h, w))
            if hha:
                write_png(root / "data" / "hha" / f"{stem}.png", random_image(rng, h, w))
            values = rng.integers(0, 41, (h, w), dtype=np.uint8)
            values[: h // 4, : w // 4] = 0
            write_mat(root / "segmentation" / f"{stem}.mat", {"segmentation": values})
            written[sample_id] = values
        write_list(root / f"{split}.txt", list(sizes))
    return written


SIFTFLOW_SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"


def write_siftflow_tree(
    root: Path, splits: dict[str, dict[str, tuple[int, int]]], seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A SIFT Flow root: ``Images/<subdir>/<id>.jpg``, ``SemanticLabels/<subdir>/<id>.mat``
    (``S`` double, 0 = unlabeled, 1..33), ``GeoLabels/<subdir>/<id>.mat`` (``S`` double, -1 =
    unlabeled, 1..3; 0 occurs too) and a ``<split>.txt`` of ids per split.

    Returns id -> (semantic values, geometric values) as written.
    """
    rng = np.random.default_rng(seed)
    written = {}
    for split, sizes in splits.items():
        for sample_id, (h, w) in sizes.items():
            write_jpeg(
                root / "Images" / SIFTFLOW_SUBDIR / f"{sample_id}.jpg", random_image(rng, h, w)
            )
            semantic = rng.integers(0, 34, (h, w)).astype(np.float64)
            semantic[: h // 4, : w // 4] = 0
            geometric = rng.integers(-1, 4, (h, w)).astype(np.float64)
            names = np.array(["sky", "horizontal", "vertical"], dtype=object)
            write_mat(
                root / "SemanticLabels" / SIFTFLOW_SUBDIR / f"{sample_id}.mat", {"S": semantic}
            )
            write_mat(
                root / "GeoLabels" / SIFTFLOW_SUBDIR / f"{sample_id}.mat",
                {"S": geometric, "names": names},
            )
            written[sample_id] = (semantic, geometric)
        write_list(root / f"{split}.txt", list(sizes))
    return written


def write_context_tree(
    root: Path, splits: dict[str, dict[str, tuple[int, int]]], seed: int = 0
) -> dict[str, np.ndarray]:
    """A PASCAL-Context root: ``VOCdevkit/VOC2010/JPEGImages/<id>.jpg``,
    ``VOCdevkit/VOC2010/ImageSets/Main/<split>.txt`` and the release's ``trainval/<id>.mat``
    (``LabelMap`` uint16, 0..459: indices into labels.txt, whose shipped copy is used).

    Returns id -> LabelMap as written.
    """
    rng = np.random.default_rng(seed)
    devkit = root / "VOCdevkit" / "VOC2010"
    written = {}
    for split, sizes in splits.items():
        for sample_id, (h, w) in sizes.items():
            write_jpeg(devkit / "JPEGImages" / f"{sample_id}.jpg", random_image(rng, h, w))
            label_map = rng.integers(0, 460, (h, w)).astype(np.uint16)
            write_mat(root / "trainval" / f"{sample_id}.mat", {"LabelMap": label_map})
            written[sample_id] = label_map
        write_list(devkit / "ImageSets" / "Main" / f"{split}.txt", list(sizes))
    (root / "trainval").mkdir(parents=True, exist_ok=True)
    return written


def metadata_for(arch: str, n_class: int, width: float = NARROW, preprocessing=None, **fields):
    """The metadata of a one-head VGG16 FCN with default class names (``class_<i>``).

    ``preprocessing``: the input's (CAFFE_VOC by default), or a tuple with one per input;
    ``fields``: more :class:`~fcn_jax.models.NetSpec` fields, or ``class_names`` / ``palette`` /
    ``source``.
    """
    from fcn_jax.checkpoint import WeightsMetadata
    from fcn_jax.models import NetSpec
    from fcn_jax.preprocessing import CAFFE_VOC
    from fcn_jax.resources import default_class_names

    own = {k: fields.pop(k) for k in ("class_names", "palette", "source") if k in fields}
    if not isinstance(preprocessing, tuple):  # one input's, or one per input
        preprocessing = (preprocessing or CAFFE_VOC,)
    spec = NetSpec.single(arch, n_class, width=width, preprocessing=preprocessing, **fields)
    own.setdefault("class_names", default_class_names(n_class))
    return WeightsMetadata(spec=spec, **own)


def random_weights(spec, seed: int = 0) -> dict:
    """Variables ``{"params": ...}`` of ``spec``'s network (a VGG16 FCN: no BatchNorm, so no
    other collection), random in *every* layer, He-scaled; numpy, no torch.

    As :func:`fcn_jax.torch_reference.random_state_dict` draws them: score layers and upsampling
    kernels random too (a fresh FCN's zero score layers make every logit equal), biases uniform
    in [-0.1, 0.1), each kernel normal with variance 2 / fan-in, so activations keep their
    magnitude through the 15+ layers. An upsampling kernel (2x its stride) reaches each output
    pixel with 4 taps per input channel.
    """
    from flax import traverse_util

    from fcn_jax.models import abstract_variables

    rng = np.random.default_rng(seed)
    params = {}
    abstract = abstract_variables(spec)["params"]
    for path, leaf in traverse_util.flatten_dict(abstract).items():
        if path[-1] == "bias":
            params[path] = rng.uniform(-0.1, 0.1, leaf.shape).astype(np.float32)
            continue
        *_, c_in, _ = leaf.shape  # [kh, kw, c_in, c_out]
        fan_in = 4 * c_in if path[-2].startswith("upscore") else int(np.prod(leaf.shape[:-1]))
        params[path] = (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return {"params": traverse_util.unflatten_dict(params)}


def save_random_weights(directory: Path, metadata, seed: int = 0) -> Path:
    """A weights directory of :func:`random_weights` for ``metadata``'s network."""
    from fcn_jax.checkpoint import save_weights

    return save_weights(directory, random_weights(metadata.spec, seed), metadata)


def device_env(n: int) -> dict[str, str]:
    """The environment of a subprocess with ``n`` fake CPU devices, keeping the workers'
    one-thread XLA flags (conftest) so that 4 devices do not oversubscribe 2 cores."""
    flags = os.environ.get("XLA_FLAGS", "")
    return {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={n}"}


def run_script(
    script: str, *args: object, cwd: Path = REPO, env: dict | None = None, timeout: int = 120
) -> subprocess.CompletedProcess:
    """``python REPO/SCRIPT ARGS...`` in ``cwd``, output captured as text (never raises on exit).

    ``env`` entries are added to this process's environment.
    """
    return subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


# --- COCO 2017 -----------------------------------------------------------------------------------

# COCO's own category table for the ids the tiny tree uses: four VOC classes and one that is not.
COCO_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 6, "name": "bus", "supercategory": "vehicle"},
    {"id": 13, "name": "stop sign", "supercategory": "outdoor"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
]
COCO_SIZE = (30, 40)  # every image's (height, width): one shape after the 520 resize
# VOC class indices of the categories above (VOC's order: car 7, bus 6, dog 12, person 15).
VOC_PERSON, VOC_CAR, VOC_BUS, VOC_DOG = 15, 7, 6, 12


def rect(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """A COCO polygon around the pixels [y0, y1) x [x0, x1) (pixel corners at integers)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts of a [H, W] bool mask: run lengths over the pixels in
    column-major order, starting with a (possibly empty) run of zeros."""
    flat = mask.T.reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def write_coco_tree(
    root: Path, splits: tuple[str, ...] = ("val2017",), seed: int = 0
) -> dict[str, np.ndarray]:
    """A COCO 2017 root (``<split>/<file>.jpg``, ``annotations/instances_<split>.json``) whose
    three images, the same in every split, exercise torchvision's VOC conversion:

    - ``000000000139``: no annotations (all background; not in train2017);
    - ``000000037777``: a crowd person as uncompressed RLE with a bus polygon overlapping it, and
      a large stop sign (not a VOC class); VOC areas 600 + 400 = 1000, not more: not in train2017;
    - ``000000397133``: a person and a dog overlapping (void where they do), a stop sign over part
      of the dog (the dog's, not void: a non-VOC instance is dropped first), a car in two
      overlapping polygon parts (one instance: not void); VOC areas 1100.

    Returns file stem -> the expected [H, W] uint8 label, drawn by hand from the rectangles.
    """
    rng = np.random.default_rng(seed)
    h, w = COCO_SIZE
    images = {139: random_image(rng, h, w), 37777: random_image(rng, h, w)}
    images[397133] = random_image(rng, h, w)
    labels = {i: np.zeros((h, w), np.uint8) for i in images}
    anns = []

    def add(image_id, category_id, segmentation, area, iscrowd=0):
        anns.append({
            "id": len(anns) + 1, "image_id": image_id, "category_id": category_id,
            "segmentation": segmentation, "area": area, "iscrowd": iscrowd, "bbox": [0, 0, 1, 1],
        })  # fmt: skip

    # 37777: crowd person rows 5..14 x cols 5..24 (RLE), bus rows 10..19 x cols 20..29 on top.
    crowd = np.zeros((h, w), bool)
    crowd[5:15, 5:25] = True
    add(37777, 1, {"counts": rle_counts(crowd), "size": [h, w]}, 600.0, iscrowd=1)
    add(37777, 6, [rect(20, 10, 30, 20)], 400.0)
    add(37777, 13, [rect(0, 0, 40, 30)], 5000.0)  # covers everything, yet it is background
    label = labels[37777]
    label[5:15, 5:25] = VOC_PERSON
    label[10:20, 20:30] = VOC_BUS
    label[10:15, 20:25] = 255  # person and bus
    # 397133: person rows 3..19 x cols 2..11, dog rows 10..24 x cols 10..19 (overlap: void);
    # stop sign rows 20..27 x cols 18..29 over the dog; car parts rows 2..7 and 5..11 x 30..37/
    # 34..38 (one instance).
    add(397133, 1, [rect(2, 3, 12, 20)], 400.0)
    add(397133, 18, [rect(10, 10, 20, 25)], 700.0)
    add(397133, 13, [rect(18, 20, 30, 28)], 90.0)
    add(397133, 3, [rect(30, 2, 38, 8), rect(34, 5, 39, 12)], 0.0)
    label = labels[397133]
    label[3:20, 2:12] = VOC_PERSON
    label[10:25, 10:20] = VOC_DOG
    label[10:20, 10:12] = 255
    label[2:8, 30:38] = VOC_CAR
    label[5:12, 34:39] = VOC_CAR
    info = [
        {"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w, "license": 1}
        for i in (397133, 37777, 139)  # not in id order: the loader sorts by id
    ]
    for split in splits:
        for i, image in images.items():
            write_jpeg(root / split / f"{i:012d}.jpg", image)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        data = {"info": {}, "licenses": [], "images": info, "annotations": anns}
        data["categories"] = COCO_CATEGORIES
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return {f"{i:012d}": label for i, label in labels.items()}
