"""The config schema every experiment shares, with the PASCAL VOC defaults of the paper.

Top level: ``seed``, ``num_steps`` (or ``num_epochs``), ``batch_size`` (global, over all
devices and hosts),
``learning_rate``, ``eval_every``, ``checkpoint_every``, ``log_every``, ``parallel``,
``num_devices``, ``dtype``; sections ``data``,
``model``, ``init``, ``optim``, ``eval``. Experiments (``configs/*.py``) call :func:`base`,
override fields and end with :func:`finish`.
Optional fields are ``placeholder``s (typed None) so that ``--config.x=...`` can set them.
``model.n_class`` is one for data that names its own classes (CamVid's ``class_dict.csv``, a
folder's ``classes.txt``): :func:`resolve_n_class` takes it from the dataset.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import ml_collections
from ml_collections import config_dict

from fcn_jax.data.nyud import MODALITY_PREPROCESSING
from fcn_jax.errors import FCNError, format_list
from fcn_jax.models import NetSpec
from fcn_jax.models.fcn import SINGLE_HEAD
from fcn_jax.preprocessing import PRESETS, Preprocessing

if TYPE_CHECKING:  # the data package imports configs' users; annotations only
    from fcn_jax.data.base import SegmentationDataset


def base() -> ml_collections.ConfigDict:
    """The release's VOC setting: SBD train, seg11valid, batch 1 whole images, Caffe input."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_steps = 100_000
    # Passes over the training split instead of num_steps (None: num_steps decides). Set, the
    # run takes num_epochs * steps per epoch steps (resolve_num_steps), the count the epoch
    # schedules below use: a recipe written in epochs (SpeedPaper's) fits any dataset's size.
    c.num_epochs = config_dict.placeholder(int)
    c.batch_size = 1
    c.learning_rate = 1e-10
    c.eval_every = 4_000
    c.checkpoint_every = 4_000
    # Steps between reads of the loss on the host (metrics.jsonl, TensorBoard, progress bar,
    # and the NaN check): each read waits for the step, so very small values slow a fast run.
    c.log_every = 10
    # Data parallel over every device (and host): "sharding" (jit over a device mesh) or "pmap".
    c.parallel = "sharding"
    c.num_devices = config_dict.placeholder(int)  # this host's devices to use; None: all
    # Compute dtype: "bfloat16" computes in bf16 with float32 params, optimiser state and loss.
    c.dtype = "float32"
    c.keep_checkpoints = 2  # latest checkpoints kept (plus the best by validation mean IU)

    c.data = ml_collections.ConfigDict()
    c.data.name = "voc"  # a key of fcn_jax.data.DATASETS
    # The folder holding the dataset as downloaded: for VOC, the one with VOCdevkit/ and
    # benchmark_RELEASE/. Set it on the command line: --config.data.root=/path/to/pascal.
    c.data.root = config_dict.placeholder(str)
    c.data.split = "sbd_train"  # training split (SBD train, 8,498 images)
    c.data.eval_split = "seg11valid"  # 736 VOC2011 val images not in SBD train
    c.data.year = config_dict.placeholder(int)  # VOC devkit year; None: 2012, else 2011
    c.data.preprocessing = "caffe"  # what the config expects; the weights' metadata wins
    c.data.modalities = ("image",)  # record keys the network reads, one per stream
    # Whole images, batch 1 (faithful). Buckets pad batches to a few sizes (multiples of
    # bucket_step up to max_size) instead; crop and flip are for non-paper recipes.
    c.data.buckets = config_dict.placeholder(tuple)
    c.data.bucket_step = 32
    c.data.max_size = 500  # largest image side in the dataset (VOC: 500)
    # (height, width) cut from the centre of every training image and label before any random
    # crop, as torchvision's center_crop (SpeedPaper: (352, 480) on CamVid); None: whole images.
    c.data.centre_crop = config_dict.placeholder(tuple)
    # Random scale (torchvision's segmentation recipe): each training image's shorter side is
    # resized to a whole number of pixels drawn uniformly from [min, max] (bilinear; labels
    # nearest), before the crop and flip. (260, 1040) is 0.5-2.0 x 520. None: no resize.
    c.data.resize_range = config_dict.placeholder(tuple)
    # Random square crop (a side shorter than it is padded, images with 0, labels with void).
    c.data.crop_size = config_dict.placeholder(int)
    c.data.flip = False
    # Colour labels (class_dict.csv): void rows are ordinary classes at their row's index, as
    # SpeedPaper trains CamVid; False: void is the ignored label 255 (index masks: always 255).
    c.data.void_as_class = False
    c.data.worker_count = 0  # >0: decode in worker processes (reading threads always prefetch)
    # TFDS only: the dataset's TFDS name, and the mask feature of one without a preset.
    c.data.tfds_name = config_dict.placeholder(str)
    c.data.tfds_mask_key = config_dict.placeholder(str)
    # Synthetic data only (ignored by the others).
    c.data.num_images = 0
    c.data.min_size = 0

    c.model = ml_collections.ConfigDict()
    c.model.arch = "fcn32s"
    c.model.backbone = "vgg16"  # a key of fcn_jax.models.backbones.BACKBONES
    c.model.n_class = 21
    c.model.width = 1.0
    c.model.learn_upsampling = False
    # FCN-ResNets: the auxiliary head on layer3 (trained with weight optim.aux_loss_weight).
    c.model.aux = False
    # BatchNorm backbones (vgg16_bn): normalise with the running statistics in training too and
    # keep them (fine-tuning with small batches; the only sensible choice at batch 1).
    c.model.freeze_bn = False
    c.model.streams = ()  # ("color", "hha"): one VGG16 per input, late fusion (NYUDv2)
    c.model.heads = ()  # (("sem", 33), ("geo", 3)): several outputs on one trunk (SIFT Flow)
    # Convolutions: "xla" (XLA's own), "gemm" (matrix products, fast on XLA:CPU) or "auto"
    # (gemm on a CPU, xla on GPUs and TPUs).
    c.model.conv_impl = "auto"

    c.init = ml_collections.ConfigDict()
    # Weights directory, training workdir or .pth to start from (by layer name). From scratch
    # (random initialisation): None, which on the command line is --config.init.from_=None or
    # --config.init.from_= (the text "None" and an empty value both mean None). Not read when
    # the workdir is resumed. (``from_``: ``from`` is a Python keyword, which
    # --config.init.from=... cannot parse.)
    c.init.from_ = config_dict.placeholder(str)
    # (FCN-32s starts from VGG16: pass a torchvision VGG16 .pth, converted on the fly, or a
    # weights directory converted from the release's Caffe VGG16.)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"
    c.optim.momentum = 0.99
    c.optim.weight_decay = 5e-4
    c.optim.bias_lr_mult = 2.0
    c.optim.loss = "sum"  # summed over valid pixels, hence the tiny learning rates
    c.optim.accum_steps = 1  # micro-batches per step (Caffe's iter_size)
    c.optim.trainable = config_dict.placeholder(str)  # regex of layers that learn; None: all
    c.optim.lr_halve_every_epochs = config_dict.placeholder(int)  # None: constant rate
    # torch's MultiStepLR in epochs: the rate times lr_gamma at the start of each of these
    # epochs, e.g. (50, 80); None: no milestones. Not together with lr_halve_every_epochs.
    c.optim.lr_milestone_epochs = config_dict.placeholder(tuple)
    c.optim.lr_gamma = 0.1
    # Poly schedule: learning_rate * (1 - step / num_steps) ** power at every step
    # (torchvision's segmentation recipe: 0.9). Not together with the epoch schedules.
    c.optim.lr_poly_power = config_dict.placeholder(float)
    # ((regex, multiplier), ...): params whose path (e.g. "aux_classifier/0/kernel") a regex
    # matches from its start learn at that multiple of the rate; None: one rate (and biases').
    c.optim.lr_mults = config_dict.placeholder(tuple)
    # Decay biases (and BatchNorm's shifts) too, as torch's weight_decay does; False: Caffe's
    # decay_mult 0 for biases.
    c.optim.decay_biases = False
    # The auxiliary head's loss is added at this weight (model.aux; torchvision's 0.5).
    c.optim.aux_loss_weight = 0.5

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 1
    c.eval.bucket = False  # exact whole-image evaluation by default
    # Shorter side images are resized to before validation, eval.py and predict.py (labels
    # nearest; torchvision's FCN-ResNets: 520), stored in the trained weights' metadata. None:
    # the size of init.from_'s weights if they have one, else images as they are.
    c.eval.resize = config_dict.placeholder(int)
    return c


def nyud(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """NYUDv2's data section (the paper's Table 4): 40 classes, trainval / test."""
    c.data.name = "nyud"
    c.data.split = "trainval"  # 795 images (train + val)
    c.data.eval_split = "test"  # 654 images
    c.data.preprocessing = "caffe-nyud"
    c.data.max_size = 640
    c.model.n_class = 40
    c.init.from_ = "weights/vgg16.pth"  # torchvision VGG16 (or a converted weights dir)
    return c


def context(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """PASCAL-Context's data section (Table 6): 59 classes + background, VOC2010 train / val."""
    c.data.name = "context"
    c.data.split = "train"  # VOC2010 train (4,998 images)
    c.data.eval_split = "val"  # VOC2010 val (5,105 images)
    c.data.preprocessing = "caffe-context"
    c.model.n_class = 60
    c.init.from_ = "weights/vgg16.pth"
    return c


def coco_voc(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """COCO 2017 as VOC's 21 classes (:mod:`fcn_jax.data.coco`): train2017 / val2017.

    The data torchvision's FCN-ResNet weights were trained and scored on
    (``references/segmentation``, ``--dataset coco``).
    """
    c.data.name = "coco_voc"
    c.data.split = "train2017"  # the images with VOC instances covering > 1000 pixels
    c.data.eval_split = "val2017"  # all 5,000 images
    c.data.max_size = 640  # COCO's longest image side
    c.model.n_class = 21
    return c


def camvid(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """CamVid as the seed's users have it: class_dict.csv, colour labels, ImageNet statistics.

    The class count comes from the csv (the seed's holds 11 classes and Void, Kaggle's 31 and
    Void); ``--config.model.n_class=N`` is checked against it.
    """
    c.data.name = "camvid"
    c.data.split = "train"
    c.data.eval_split = "val"
    c.data.preprocessing = "torchvision"  # the seed normalises with ImageNet mean/std
    c.data.max_size = 960
    c.model.arch = "fcn8s"
    # From class_dict.csv (resolve_n_class): the seed's and Kaggle's csv differ (11 or 31).
    c.model.n_class = config_dict.placeholder(int)
    c.init.from_ = "weights/vgg16.pth"
    return c


def fcn_resnet(c: ml_collections.ConfigDict, depth: int) -> ml_collections.ConfigDict:
    """The FCN-ResNet recipe of torchvision's ``references/segmentation``, on VOC + SBD train.

    ``train.py --model fcn_resnet{depth} --aux-loss``: SGD, momentum 0.9, weight decay 1e-4 on
    every parameter, learning rate 0.02 for a global batch of 32 (8 GPUs x 4) decaying as
    ``(1 - step / steps) ** 0.9`` per iteration, 30 epochs; the auxiliary head's loss at
    weight 0.5 and its params at 10x the rate; each image's shorter side resized to a random
    260-1040 px (0.5-2.0 x 520), flipped, cropped to 480 (void-padded); SyncBatchNorm
    statistics over the global batch; the trunk from torchvision's ImageNet ResNet. Evaluation
    and prediction resize the shorter side to 520 first.
    """
    c.model.arch = f"fcn_resnet{depth}"
    c.model.backbone = f"resnet{depth}"
    c.model.aux = True
    c.data.preprocessing = "torchvision"  # RGB [0, 1], ImageNet mean / std
    c.data.resize_range = (260, 1040)  # int(0.5 * 520), int(2.0 * 520)
    c.data.crop_size = 480
    c.data.flip = True
    c.init.from_ = f"weights/resnet{depth}.pth"  # torchvision's ImageNet resnet{depth}
    c.batch_size = 32  # global: BatchNorm's statistics are over all of it (SyncBatchNorm)
    c.num_epochs = 30
    c.learning_rate = 0.02
    c.optim.name = "sgd"
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.optim.decay_biases = True  # torch's weight_decay decays every parameter
    c.optim.bias_lr_mult = 1.0
    c.optim.loss = "mean"  # F.cross_entropy(ignore_index=255): the mean over valid pixels
    c.optim.lr_poly_power = 0.9
    c.optim.lr_mults = (("aux_classifier/", 10.0),)
    c.optim.aux_loss_weight = 0.5
    c.eval.resize = 520  # SegmentationPresetEval(base_size=520)
    c.eval_every = 1_000
    c.checkpoint_every = 500
    return c


def fcn_resnet_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The FCN-ResNet recipe at demo size, after :func:`smoke`: everything but the scale.

    Aux head, poly schedule, random resize, crop and flip, evaluation resize, train-mode
    BatchNorm over a batch of 4: on 48-64 px synthetic shapes, 5 classes. Two steps as every
    smoke variant; ``--config.num_steps=100`` visibly learns (tests/train/test_fcn_resnet_recipe).
    """
    c.data.num_images = 32
    c.data.min_size, c.data.max_size = 48, 64
    c.data.resize_range = (48, 64)
    c.data.crop_size = 64
    c.eval.resize = 64
    c.eval.bucket = True  # padded to a few buckets: a compilation each, not one per image
    c.eval.batch_size = 8
    c.model.n_class = 5
    c.batch_size = 4
    c.learning_rate = 0.05  # from scratch, not from ImageNet's ResNet
    return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink any config to a seconds-long CPU run: tiny synthetic data, narrow network."""
    c.num_steps = 2
    c.num_epochs = None  # num_steps decides
    c.eval_every = 2
    c.checkpoint_every = 2
    c.data.name = "synthetic"
    c.data.root = None
    c.data.split = "train"
    c.data.eval_split = "val"
    c.data.num_images = 4
    c.data.min_size = 24
    c.data.max_size = 40
    c.data.worker_count = 0
    c.data.centre_crop = None  # the synthetic images are smaller than any recipe's crop
    # A recipe's random scale, crop and evaluation resize, scaled to the synthetic sizes.
    if c.data.resize_range is not None:
        c.data.resize_range = (c.data.min_size, c.data.max_size)
    if c.data.crop_size is not None:
        c.data.crop_size = 32
    if c.eval.resize is not None:
        c.eval.resize = 32
    c.model.width = 0.0625
    if c.model.n_class is None:  # taken from the data, but synthetic data needs a count
        c.model.n_class = 5
    c.init.from_ = None  # smoke runs start from scratch
    c.batch_size = 1
    c.optim.accum_steps = 1
    return c


def finish(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Apply the ``get_config(arg)`` variant: None (as written) or ``smoke``."""
    if arg in (None, ""):
        return c
    if arg == "smoke":
        return smoke(c)
    raise ValueError(f"unknown config variant {arg!r}: use none or ':smoke'")


def load_config_file(path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of an experiment file (``configs/voc_fcn8s.py``), without absl flags.

    Raises:
        FCNError: the file does not exist or is not a Python file.
    """
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"config file {path} not found")
    spec = importlib.util.spec_from_file_location(f"fcn_jax_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise FCNError(f"config file {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def resolve_n_class(
    config: ml_collections.ConfigDict, dataset: SegmentationDataset
) -> ml_collections.ConfigDict:
    """``config`` with ``model.n_class`` taken from ``dataset`` where the config leaves it None.

    Configs for data that names its own classes (CamVid's ``class_dict.csv``, a folder's
    ``classes.txt``) leave the count unset, so the data and the config cannot disagree; train
    and eval call this once the dataset is made, before anything reads ``model.n_class``.

    Args:
        config: the experiment config (not modified).
        dataset: the split the run reads (its ``n_class`` counts the ``label`` classes, the
            first head's for a multi-head network, as ``model.n_class`` does).

    Returns:
        A copy of ``config`` whose ``model.n_class`` is the dataset's.

    Raises:
        FCNError: the config sets ``model.n_class`` and the dataset has another count.
    """
    n_class = config.model.get("n_class")
    if n_class is not None and n_class != dataset.n_class:
        raise FCNError(
            f"config.model.n_class is {n_class} but {dataset!r} has {dataset.n_class} classes "
            f"({format_list(dataset.class_names, 8)}): pass --config.model.n_class="
            f"{dataset.n_class}, or leave it unset in the config to take the data's"
        )
    config = config.copy_and_resolve_references()
    config.model.n_class = dataset.n_class
    return config


def resolve_num_steps(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> ml_collections.ConfigDict:
    """``config`` with ``num_steps`` taken from ``num_epochs`` where that is set.

    Args:
        config: the experiment config (not modified).
        steps_per_epoch: optimiser steps per pass over the training split, as the epoch
            schedules count them (:func:`fcn_jax.train.optim.learning_rate_schedule`).

    Returns:
        ``config`` itself when ``num_epochs`` is None, else a copy whose ``num_steps`` is
        ``num_epochs * steps_per_epoch``.

    Raises:
        FCNError: ``num_epochs`` below 1.
    """
    epochs = config.get("num_epochs")
    if epochs is None:
        return config
    if epochs < 1:
        raise FCNError(f"config.num_epochs={epochs} must be >= 1 (or None: num_steps decides)")
    config = config.copy_and_resolve_references()
    config.num_steps = int(epochs) * int(steps_per_epoch)
    return config


def spec_from_config(
    config: ml_collections.ConfigDict, preprocessing: Preprocessing | None = None
) -> NetSpec:
    """The network a config's ``model`` and ``data`` sections describe (``dtype`` included).

    Args:
        config: the experiment config; ``model.n_class`` must be set (:func:`resolve_n_class`).
        preprocessing: the first input's normalisation where the weights decide it (a run that
            starts from converted weights); by default ``data.preprocessing``'s preset.

    Raises:
        FCNError: ``model.n_class`` is unset, or an unknown preprocessing, arch, backbone,
            dtype or conv_impl (each names its key).
    """
    m, d = config.model, config.data
    if m.get("n_class") is None:
        raise FCNError(
            "config.model.n_class is not set: it comes from the dataset (resolve_n_class) or "
            "--config.model.n_class=N"
        )
    if preprocessing is None:
        if d.preprocessing not in PRESETS:
            raise FCNError(
                f"config.data.preprocessing {d.preprocessing!r} is not one of {sorted(PRESETS)}"
            )
        preprocessing = PRESETS[d.preprocessing]
    inputs = tuple(d.modalities)
    # ``image`` takes data.preprocessing (or the weights'); another modality its own (HHA's).
    first = MODALITY_PREPROCESSING.get(inputs[0], preprocessing)
    heads = tuple((str(h), int(n)) for h, n in m.heads) or ((SINGLE_HEAD, m.n_class),)
    try:
        return NetSpec(
            arch=m.arch,
            heads=heads,
            backbone=m.get("backbone", "vgg16"),
            streams=tuple(m.streams),
            inputs=inputs,
            preprocessing=(first, *(MODALITY_PREPROCESSING[k] for k in inputs[1:])),
            width=m.width,
            dtype=config.dtype,
            learn_upsampling=m.learn_upsampling,
            aux=m.get("aux", False),
            conv_impl=m.get("conv_impl", "auto"),
        )
    except FCNError as e:
        raise FCNError(f"config.model: {e}") from None
