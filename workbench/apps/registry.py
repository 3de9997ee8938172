"""The one registration point of the app hub: one entry per paper tab.

The hub imports ``apps.<module>`` and calls its ``build()`` inside a tab; adding a paper means adding its
module file (and, for a new paper, one line here) — never editing the hub's layout code.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tab:
    module: str  # apps/<module>.py
    title: str  # tab label
    blurb: str  # one line shown above the tab's content


TABS: tuple[Tab, ...] = (
    Tab("swin_v2", "Swin V2 position bias",
        "Log-spaced continuous position bias, window transfer and a tiny Swin V2 classifier."),
    Tab("simmim", "SimMIM reconstructions",
        "Random masking with large mask patches, AvgDist and raw-pixel reconstructions."),
    Tab("moby", "MoBY embeddings",
        "Self-supervised embeddings of a Swin V2 backbone: map, nearest neighbours, two views."),
    Tab("cbn", "CBN statistics",
        "Cross-iteration batch statistics with Taylor compensation, live or replayed."),
    Tab("dnl", "DNL attention maps",
        "Whitened pairwise and unary attention of the disentangled non-local block."),
    Tab("icar", "iCAR zero-shot",
        "A cosine classifier whose class weights come from a text encoder and class descriptions."),
    Tab("sparse", "Balanced sparsity",
        "Balanced pruning, the packed format and measured speedups against dense and CSR."),
)
