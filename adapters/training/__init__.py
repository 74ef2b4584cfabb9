"""Adapter training on the frozen backbone: LoRA, textual inversion and VPT (`diffplex adapters train`).

One job per module: `data` (training images and captions), `loop` (the shared epsilon-prediction loop),
`ti` / `lora` / `vpt` (what each kind makes trainable and how it is saved), `evaluate` (judge-scored
generation through the reference banked path) and `cli` (the command lines).
"""
