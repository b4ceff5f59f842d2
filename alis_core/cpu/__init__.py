"""The CPU engine behind one seam: `choose_plan` picks how a synthesis pass runs (`RenderPlan`), and
`synthesize` runs the plans it marks `fused`. See plan.py and fused.py."""
from .fused import synthesize
from .plan import RenderPlan, choose_plan

__all__ = ["RenderPlan", "choose_plan", "synthesize"]
