"""Synapse rows get the compartments of their partners from the compartments layer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from wiremap.synapses.compartment_labels import synapse_compartments
from wiremap.volume import Layer, write_volume


def test_each_partner_gets_the_compartment_of_its_own_voxels_near_the_synapse(workspace):
    seg = np.zeros((4, 64, 600), np.uint64)
    seg[:, :, :300] = 7  # presynaptic cell on the left (axon)
    seg[:, :, 300:] = 9  # postsynaptic cell on the right: dendrite near the synapse, soma far away
    comp = np.zeros((4, 64, 600), np.uint32)
    comp[:, :, :300] = 2
    comp[:, :, 300:] = 3
    comp[:, :, 560:] = 1
    write_volume(workspace, "segmentation", seg, resolution_nm=(30, 4, 4), kind="segmentation")
    write_volume(workspace, "compartments", comp, resolution_nm=(30, 4, 4), kind="segmentation")
    table = pd.DataFrame(
        {
            "pre": np.array([7, 7, 5], np.uint64),
            "post": np.array([9, 9, 9], np.uint64),
            "z": [1.2, 2.0, 2.0],
            "y": [30.0, 30.0, 30.0],
            "x": [300.4, 599.0, 300.0],  # the third row names a cell that is not there
        }
    )
    seg_layer, comp_layer = Layer(workspace, "segmentation"), Layer(workspace, "compartments")
    labels = synapse_compartments(table, seg_layer, comp_layer, reach_nm=80.0)
    assert labels["pre_compartment"].tolist() == ["axon", "", ""]  # the second is 75 px from cell 7
    assert labels["post_compartment"].tolist() == ["dendrite", "soma", "dendrite"]
    assert len(synapse_compartments(table.iloc[:0], seg_layer, comp_layer)) == 0
