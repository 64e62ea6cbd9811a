"""Accuracy: Conv4Rec against its peers on the same splits and grids (`python -m benchmarks.accuracy`),
and the controls that test its gaps (`rank_sweep`, `loss_control`, `paired_gap`, `core_ml100k`)."""
