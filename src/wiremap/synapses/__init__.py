"""Synapses: detection, pre/post partners, size and excitatory/inhibitory calls (``wiremap synapses``)."""
