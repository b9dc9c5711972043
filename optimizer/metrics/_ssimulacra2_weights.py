"""SSIMULACRA 2.1's 108 weights and the mapping from the weighted sum of pooled values to the score, kept
apart from the streaming code (:mod:`optimizer.metrics.ssimulacra2`) because they are data from the C++ tool,
to be compared against it line by line."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["WEIGHTS", "score_from_subscores"]

#: The 108 SSIMULACRA 2.1 weights, in the C++ order: plane (X, Y, B), scale, norm (1, 4), then map
#: (SSIM', artifact, detail lost) within each row.
WEIGHTS: tuple[float, ...] = (
    0.0, 0.0007376606707406586, 0.0,  # X 1:1 1-norm
    0.0, 0.0007793481682867309, 0.0,  # X 1:1 4-norm
    0.0, 0.0004371155730107379, 0.0,  # X 1:2 1-norm
    1.1041726426657346, 0.00066284834129271, 0.00015231632783718752,  # X 1:2 4-norm
    0.0, 0.0016406437456599754, 0.0,  # X 1:4 1-norm
    1.8422455520539298, 11.441172603757666, 0.0,  # X 1:4 4-norm
    0.0007989109436015163, 0.000176816438078653, 0.0,  # X 1:8 1-norm
    1.8787594979546387, 10.94906990605142, 0.0,  # X 1:8 4-norm
    0.0007289346991508072, 0.9677937080626833, 0.0,  # X 1:16 1-norm
    0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053,  # X 1:16 4-norm
    0.0004550992113792063, 0.0, 0.0,  # X 1:32 1-norm
    0.0013648766163243398, 0.0, 0.0,  # X 1:32 4-norm
    0.0, 0.0, 0.0,  # Y 1:1 1-norm
    7.466890328078848, 0.0, 17.445833984131262,  # Y 1:1 4-norm
    0.0006235601634041466, 0.0, 0.0,  # Y 1:2 1-norm
    6.683678146179332, 0.00037724407979611296, 1.027889937768264,  # Y 1:2 4-norm
    225.20515300849274, 0.0, 0.0,  # Y 1:4 1-norm
    19.213238186143016, 0.0011401524586618361, 0.001237755635509985,  # Y 1:4 4-norm
    176.39317598450694, 0.0, 0.0,  # Y 1:8 1-norm
    24.43300999870476, 0.28520802612117757, 0.0004485436923833408,  # Y 1:8 4-norm
    0.0, 0.0, 0.0,  # Y 1:16 1-norm
    34.77906344483772, 44.835625328877896, 0.0,  # Y 1:16 4-norm
    0.0, 0.0, 0.0,  # Y 1:32 1-norm
    0.0, 0.0, 0.0,  # Y 1:32 4-norm
    0.0, 0.0008680556573291698, 0.0,  # B 1:1 1-norm
    0.0, 0.0, 0.0,  # B 1:1 4-norm
    0.0, 0.0005313191874358747, 0.0,  # B 1:2 1-norm
    0.00016533814161379112, 0.0, 0.0,  # B 1:2 4-norm
    0.0, 0.0, 0.0,  # B 1:4 1-norm
    0.0004179171803251336, 0.0017290828234722833, 0.0,  # B 1:4 4-norm
    0.0020827005846636437, 0.0, 0.0,  # B 1:8 1-norm
    8.826982764996862, 23.19243343998926, 0.0,  # B 1:8 4-norm
    95.1080498811086, 0.9863978034400682, 0.9834382792465353,  # B 1:16 1-norm
    0.0012286405048278493, 171.2667255897307, 0.9807858872435379,  # B 1:16 4-norm
    0.0, 0.0, 0.0,  # B 1:32 1-norm
    0.0005130064588990679, 0.0, 0.00010854057858411537,  # B 1:32 4-norm
)  # fmt: skip


def score_from_subscores(values: np.ndarray | list[float]) -> float:
    """Weighted sum of the pooled values (walked sequentially, as the C++ does) and the 2.1 mapping."""
    values = np.abs(np.asarray(values, dtype=np.float64))
    total = float(np.dot(np.asarray(WEIGHTS[: values.size]), values))
    s = total * 0.9562382616834844
    s = 2.326765642916932 * s - 0.020884521182843837 * s * s + 6.248496625763138e-05 * s * s * s
    if s > 0:
        return 100.0 - 10.0 * math.pow(s, 0.6276336467831387)
    return 100.0
