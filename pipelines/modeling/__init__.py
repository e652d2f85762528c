"""Model training: the diagnosis model (MONAI image network with late EHR fusion) and the fraud model.

Diagnosis: ``options`` (TrainOptions, ModelMeta), ``networks`` (backbones, EhrMLP, FusionNet), ``data`` (MONAI
transforms, StudyDataset, ``preprocess_image`` for serving), ``engine`` (``train``, ``load_model``,
``predict``), ``ddp`` (torchrun entry point), ``checkpoint`` (atomic files, RNG state), ``history``,
``synthetic`` (a tiny study table for smoke runs). Claims fraud: the ``fraud_*`` modules.
Nothing is imported at package import time (MONAI takes seconds to import).
"""
