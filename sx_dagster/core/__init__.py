"""The Self-Explore method as pure functions (stdlib, rapidfuzz, math-verify only).

Where each rule lives: answers and the one checker (``answers``), the safe calculator
(``calculator``), step splitting (``steps``), prompts (``prompts``), RFT selection
(``rft``), outcome pairs D_pair (``pairs``), the first pit and the exploration plan
(``pits``), step pairs D_g-pair (``gpairs``), the synthetic task (``synthetic``), dataset
rows (``tasks``).
"""
