"""The step-time cost model: pure functions of frozen inputs, returning breakdowns."""
