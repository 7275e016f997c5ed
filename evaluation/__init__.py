"""The evaluation harness: the product's detector measured on real labelled data.

Its data stays in the source tree (the bundled NAB corpus) or comes with the simulator's
distribution (AI4I 2020, C-MAPSS): neither ships in the product's wheel, so the harness runs
from a checkout or a development install. See docs/evaluation.md.
"""
