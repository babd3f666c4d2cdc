"""The data model of synthetic tissue: what the generator makes and the renderer draws.

Axis order is always ``(z, y, x)``; positions in ``Tissue`` tables are in
voxels of the tissue grid (float, voxel centres at integer coordinates);
skeleton nodes are in nanometres.  ``0`` is background in every label array.

The split is deliberate: ``tissue`` modules decide *what is where* (labels,
tables, skeletons: the ground truth), ``render`` decides *how it looks* in EM,
``acquisition`` decides *how the microscope and the knife spoil it*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import pandas as pd


class Compartment(IntEnum):
    """Codes of the ``compartments`` volume and of skeleton nodes.

    Spines count as dendrite, boutons as axon.  Myelin sheaths are not a
    compartment of the neuron they wrap (see ``Tissue.myelin``).
    """

    EXTRACELLULAR = 0
    SOMA = 1
    AXON = 2
    DENDRITE = 3
    GLIA = 4
    CILIUM = 5


@dataclass(frozen=True)
class Skeleton:
    """A tree of one cell: node ``i`` has parent ``parents[i]`` (``-1`` at the root)."""

    nodes_nm: np.ndarray  # (N, 3) float64, z/y/x in nm
    radii_nm: np.ndarray  # (N,) float64
    parents: np.ndarray  # (N,) int64, -1 for the root
    compartments: np.ndarray  # (N,) uint8, Compartment codes
    # (N,) bool: node lies inside the imaged volume (and is drawn there); None = unknown
    in_volume: np.ndarray | None = None


@dataclass
class Tissue:
    """Clean synthetic tissue with its ground truth.

    Volumes (all shape ``shape_zyx``):
      cells          uint64  neuron and glia ids; 0 = extracellular space and myelin
      compartments   uint8   Compartment code per voxel
      myelin         bool    myelin sheath voxels (belong to no neuron)
      mitochondria   uint32  mitochondrion instance ids, inside cells
      nuclei         bool    nucleus voxels, inside somata
      synapse_clefts uint32  synaptic cleft voxels labelled with synapse ``id``

    Tables:
      cell_table     id, kind ('neuron'|'glia'), cell_type (str), ei ('E'|'I'|''),
                     soma_z, soma_y, soma_x (voxels; NaN when the soma lies
                     outside the volume), soma_in_volume (bool), has_cilium (bool)
      synapse_table  id, pre, post, z, y, x (voxels, cleft centre),
                     nz, ny, nx (unit normal pointing from pre to post, in
                     voxel axes), size (cleft voxels), ei ('E'|'I'),
                     post_compartment ('dendrite'|'spine'|'soma')
    """

    resolution_nm: tuple[float, float, float]
    cells: np.ndarray
    compartments: np.ndarray
    myelin: np.ndarray
    mitochondria: np.ndarray
    nuclei: np.ndarray
    synapse_clefts: np.ndarray
    cell_table: pd.DataFrame
    synapse_table: pd.DataFrame
    skeletons: dict[int, Skeleton] = field(default_factory=dict)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.cells.shape)  # type: ignore[return-value]
