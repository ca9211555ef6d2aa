"""prometheus-adapter's rule rendering, now in the package (``ragtide.planner.adapter_rules``).

Kept as a module so the deploy tests import it from one place.
"""

from __future__ import annotations

from ragtide.planner.adapter_rules import Rule, load_rules, render, rule_named, with_range

__all__ = ["Rule", "load_rules", "render", "rule_named", "with_range"]
