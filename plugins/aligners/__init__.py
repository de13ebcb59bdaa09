"""Aligner plugins (registered trained AlignNets)."""
