"""Prefix sharing: every training prefix that several runs of a sweep have in common is trained once.

``keys`` says which runs train identically up to which step (torch-free: config and schedules only),
``store`` keeps the published prefixes on disk (torch-free: files only), ``plan`` decides which run of a
sweep trains each shared prefix and which runs fork from it. The training loop uses ``keys`` and ``store``
(midsweep.train.sharing), the launchers use all three. docs/sharing.md describes the whole mechanism.
"""
