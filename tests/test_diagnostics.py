"""The quickstart diagnostics' segment-naming AUC (benchmarks/quickstart_diagnostics.py), on hand cases."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "quickstart_diagnostics.py"
_spec = importlib.util.spec_from_file_location("quickstart_diagnostics", _PATH)
diagnostics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diagnostics)


def test_roc_auc_by_hand():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    positive = np.array([False, False, True, True])
    # pairs (pos, neg): (0.35, 0.1) yes, (0.35, 0.4) no, (0.8, 0.1) yes, (0.8, 0.4) yes -> 3/4
    assert diagnostics.roc_auc(scores, positive) == 0.75
    assert diagnostics.roc_auc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5  # a tie counts half
    assert math.isnan(diagnostics.roc_auc(scores, np.zeros(4, dtype=bool)))


def test_naming_aucs_separate_segments_that_name_their_class_from_those_that_do_not():
    majority = np.array([0, 1, 2, 0])  # background, class 1, class 2, background
    named = np.array([[0.1, 0.0], [0.9, 0.1], [0.2, 0.8], [0.0, 0.2]])
    per_class, object_vs_bg = diagnostics.naming_aucs(named, majority)
    assert per_class == 1.0 and object_vs_bg == 1.0
    swapped = named[:, ::-1]  # every object segment scores the other class best
    # class 1: its segment scores 0.1 against 0.0, 0.8, 0.2 -> 1/3; class 2: 0.2 against 0.1, 0.9, 0.0 -> 2/3
    assert diagnostics.naming_aucs(swapped, majority)[0] == 0.5
