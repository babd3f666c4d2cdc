"""Morphology of segments: meshes, skeletons, SWC, compartments (cell parts) and myelin.

Modules (pure array functions; I/O and blocks live in ``stage.py``):

  meshes        marching-cubes meshes per block (zmesh), merged per segment,
                written as Neuroglancer multi-resolution (multilod_draco) meshes
  skeletons     TEASAR skeletons per block (kimimaro), merged per segment,
                written as precomputed skeletons with radius + compartment
  swc           SWC write and read
  compartments  soma / axon / dendrite / glia / cilium per skeleton node and voxel
  myelin        myelin sheath mask from the EM image
  fragments     per-block pieces of every segment, gathered per segment later
  stage         the ``mesh``, ``skeletonize`` and ``compartments`` stages
"""
