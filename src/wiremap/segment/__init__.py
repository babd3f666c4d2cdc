"""Neuron segmentation: a small 3D U-Net for affinities, watershed supervoxels, mutex agglomeration."""
