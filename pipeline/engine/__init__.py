"""The training engine's parts: a stack of K cells as one vectorised model, its day gather and
its optimizer. The loop that drives them is `pipeline.train.fit_stack`."""
from pipeline.engine.batches import StackBatch, StackDays, member_table, stockset_width
from pipeline.engine.optim import StackAdam, clip_per_cell
from pipeline.engine.stacked import StackedModel, layout

__all__ = ["StackAdam", "StackBatch", "StackDays", "StackedModel", "clip_per_cell", "layout",
           "member_table", "stockset_width"]
