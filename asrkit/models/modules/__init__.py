"""Blocks shared by several model families (subsampling, positions, SpecAugment, masks)."""
