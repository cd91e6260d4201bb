"""The results study (docs/RESULTS.md): the paper's claims tested on real ESConv, cell by cell, cached by settings.

    profiles.py  the sizes of each profile (smoke, cpu, gpu-small, paper)
    cells.py     one cached unit of work (a training or an evaluation): settings -> key -> folder -> result
    plan.py      the study's cells for a profile, in order, with their dependencies
    stage1.py    Table 1: strategy inference (majority, zero-shot, LoRA label-only, LoRA on motivations)
    stage2.py    Table 2: response generation (MAGIC, ablations, baselines)
    report.py    docs/RESULTS.md and the plots, from the committed result files only

The study sits above both stages (it runs the numbered scripts of each) and imports them only through
their scripts and the shared layers.
"""
