"""Adapter training on the frozen backbone: LoRA, textual inversion and VPT (`diffplex adapters train`).

One job per module: `data` (training images and captions), `loop` (the shared epsilon-prediction loop),
`ti` / `lora` / `vpt` (what each kind makes trainable and how it is saved), `evaluate` (judge-scored
generation through the reference banked path), `options` (the command lines' parsers, limits and defaults,
without torch), `cli` (parse, log, report) and `run` (what a command does).
"""
